"""The training stage: corpus -> vocabulary -> data pipeline -> model -> weights."""
