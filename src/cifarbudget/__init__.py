"""Budget-constrained classifier and conditional GAN on CIFAR-100, as a DVC pipeline."""
