"""The bundled demo model's own recipe: text encoder (`pixart.demo.text_encoder`) and VAE (`pixart.demo.vae`).

Each is a command that trains from scratch on the emoji world (`pixart.data.emoji`), checkpoints, resumes, and
writes a folder in the diffusers PixArt pipeline layout (`text_encoder/`, `tokenizer/`, `vae/`).
"""
