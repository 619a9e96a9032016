"""s3pvefs: mount an S3 bucket as a Proxmox VE dir storage."""

__version__ = "0.1.0"
