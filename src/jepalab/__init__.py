"""jepalab: JEPA encoders, latent world models, planning and evidence records."""

__version__ = "0.1.0"
