"""Rule-based fibres (LDRB, Bayer et al. 2012), ventricular coordinates and AHA-17 segments."""
