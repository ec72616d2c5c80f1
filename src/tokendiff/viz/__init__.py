"""Pictures and animations of samples and of the denoising process."""
