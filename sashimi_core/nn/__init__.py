"""Layers and models: HiPPO initialisation, the S4 layer, SaShiMi, the WaveNet and SampleRNN baselines, and the
registry of architecture and preset names. Imports only ``sashimi_core.ops``."""
