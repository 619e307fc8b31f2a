"""Sample records, face alignment, geometry, transforms (image and keypoints together),
samplers, loaders and perturbations."""
