"""Core ML packages on disk: weight.bin blob storage and .mlpackage directories."""
