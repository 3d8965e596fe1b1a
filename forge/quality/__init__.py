"""Answer quality: validation of an answer against what was asked for, and judge scores."""
