"""drivesegrt: real-time semantic segmentation for driving video."""
__version__ = "0.1.0"
