"""apollo-jax: Apollo audio restoration (Li & Luo, ICASSP 2025) in JAX/Flax."""

from apollo_jax.config import ApolloConfig
from apollo_jax.model import Apollo, count_params, init_params

__all__ = ["Apollo", "ApolloConfig", "count_params", "init_params"]
