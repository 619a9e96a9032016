"""The s3pvefs benchmark (bench/run); see docs/PERFORMANCE.md."""
