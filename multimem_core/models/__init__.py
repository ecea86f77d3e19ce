"""Towers (image, text, audio, video) and the multi-tower contrastive model."""
