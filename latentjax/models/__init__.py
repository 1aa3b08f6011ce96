"""Flax ports of the Llama and Mistral decoders, their configs and HF checkpoint loading."""
