"""Training data: the synthetic "emoji world" dataset (`pixart.data.emoji`) built from OpenMoji artwork."""
