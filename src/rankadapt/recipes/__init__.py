"""Recipes: training (finetune) and what is done with its outputs (evaluate, predict, merged export)."""
