"""PrivacyCam: a privacy webcam filter for Linux."""

__version__ = "0.1.0"
