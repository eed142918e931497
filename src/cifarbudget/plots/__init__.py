"""Figures: every plot is drawn with matplotlib's Agg backend, headless."""
import matplotlib

matplotlib.use("Agg")
