"""Figures: every plot is drawn with matplotlib's Agg backend, headless.

Text is drawn as given: class names come from the archive, and mathtext would parse a `$`
in one as a formula (and fail on a malformed one).
"""
import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["text.parse_math"] = False
