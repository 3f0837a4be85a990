"""Audio both ends need: decoding and writing files, pitch, the CAM++ speaker encoder, the codec tiers."""
