"""Masks, edge-popup scores, pruning criteria and the firing statistics they use."""
