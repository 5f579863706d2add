"""A training curve as a PNG, drawn with Pillow (no plotting library to install)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 720, 360, 48
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def plot_curves(series: dict[str, list[float]], path: Path, title: str, x_label: str = "epoch") -> Path:
    """One panel per series (loss, validation recall...) side by side, epochs on x; each
    panel scaled to its own range, with its min and max written at the axis."""
    series = {name: values for name, values in series.items() if values}
    panels = max(1, len(series))
    image = Image.new("RGB", (WIDTH * panels, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 8), title, fill="black")
    for panel, ((name, values), colour) in enumerate(zip(series.items(), COLOURS)):
        left, right = panel * WIDTH + MARGIN, (panel + 1) * WIDTH - MARGIN // 2
        top, bottom = MARGIN, HEIGHT - MARGIN
        draw.rectangle((left, top, right, bottom), outline="#888888")
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        points = [(left + (right - left) * i / max(1, len(values) - 1),
                   bottom - (bottom - top) * (value - low) / span)
                  for i, value in enumerate(values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        else:
            draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2),
                         fill=colour)
        draw.text((left, top - 16), name, fill=colour)
        draw.text((left - 44, top - 6), f"{high:.3g}", fill="black")
        draw.text((left - 44, bottom - 6), f"{low:.3g}", fill="black")
        draw.text((left, bottom + 6), f"{x_label} 1", fill="black")
        draw.text((right - 70, bottom + 6), f"{x_label} {len(values)}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
