"""The GAN side of training (paper II-E): the multi-resolution STFT discriminator with
PyTorch-style spectral norm (:mod:`~apollo_jax.gan.discriminator`) and the losses
(:mod:`~apollo_jax.gan.losses`)."""
