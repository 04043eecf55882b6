"""Steps of install.py: the engine's environment, model files and editor plug-ins."""
