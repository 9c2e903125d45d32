"""Attack forensics: which attack made an image, told from the image alone, and whether the
detector survives an attacker who knows it is there (``tools/forensics.py``; README, "Attack
forensics")."""
