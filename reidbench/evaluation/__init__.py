"""Feature extraction -> retrieval -> metrics."""
