"""Dataset adapters. Importing this package registers every adapter in DATASETS."""
