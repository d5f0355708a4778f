"""Search SN-Net's design space with Ray Tune + Optuna."""
