"""Transforms, samplers and loaders."""
