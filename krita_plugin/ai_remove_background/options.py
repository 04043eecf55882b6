"""The user's choices for one run, remembered in kritarc between runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

SETTINGS_GROUP = "ai_remove_background"

# Catalogue names of the models, with the text the options dialog shows for each.
MODELS = {
    "isnet": "ISNet: precise outlines, any subject (default)",
    "u2netp": "U2-Net small: fast, keeps secondary objects",
    "rvm": "Robust Video Matting: people",
}
OUTPUT_MASK = "mask"
OUTPUT_SELECTION = "selection"
OUTPUT_LAYER = "layer"
OUTPUT_BACKGROUND = "background"
OUTPUTS = {
    OUTPUT_MASK: "Transparency mask on the layer",
    OUTPUT_SELECTION: "Selection",
    OUTPUT_LAYER: "New layer with the subject cut out",
    OUTPUT_BACKGROUND: "Subject over a new background layer",
}
BACKGROUND_COLOR = "color"
BACKGROUND_BLUR = "blur"
BACKGROUNDS = {
    BACKGROUND_COLOR: "Solid colour (a fill layer)",
    BACKGROUND_BLUR: "The original, blurred",
}
GROW_LIMIT_PIXELS = 200
FEATHER_LIMIT_PIXELS = 100
BLUR_LIMIT_PIXELS = 100


@dataclass
class Options:
    model: str = "isnet"
    refine: bool = True
    grow: int = 0  # pixels, and a negative value shrinks the mask
    feather: int = 0  # Gaussian radius in pixels
    output: str = OUTPUT_MASK
    background: str = BACKGROUND_COLOR
    background_color: str = "#ffffff"
    blur_radius: int = 20  # pixels
    limit_to_selection: bool = True
    # Use the layer's transparency mask as a hint: keep its black and white, solve the grey.
    refine_from_mask: bool = False

    def engine_options(self) -> dict[str, Any]:
        """Return the `options` object of a worker request."""
        return {"model": self.model, "refine": self.refine, "grow": self.grow, "feather": self.feather}


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(text)


def _parse_int_within(limit_low: int, limit_high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not limit_low <= value <= limit_high:
            raise ValueError(text)
        return value

    return parse


def _parse_choice(choices: dict[str, str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return parse


def _parse_color(text: str) -> str:
    if len(text) != 7 or not text.startswith("#"):
        raise ValueError(text)
    int(text[1:], 16)
    return text.lower()


def _parse_model(text: str) -> str:
    # Any name is passed on, so that models added to the engine's catalogue later work too.
    # The worker rejects an unknown name with a message that lists the installed ones.
    if not text.strip():
        raise ValueError(text)
    return text.strip()


PARSERS: dict[str, Callable[[str], Any]] = {
    "model": _parse_model,
    "refine": _parse_bool,
    "grow": _parse_int_within(-GROW_LIMIT_PIXELS, GROW_LIMIT_PIXELS),
    "feather": _parse_int_within(0, FEATHER_LIMIT_PIXELS),
    "output": _parse_choice(OUTPUTS),
    "background": _parse_choice(BACKGROUNDS),
    "background_color": _parse_color,
    "blur_radius": _parse_int_within(1, BLUR_LIMIT_PIXELS),
    "limit_to_selection": _parse_bool,
    "refine_from_mask": _parse_bool,
}


def options_from_strings(values: dict[str, str]) -> Options:
    """Build Options from stored text. A missing or invalid value falls back to its default."""
    options = Options()
    for field in fields(Options):
        text = values.get(field.name, "")
        if not text:
            continue
        try:
            setattr(options, field.name, PARSERS[field.name](text))
        except ValueError:
            pass
    return options


def options_to_strings(options: Options) -> dict[str, str]:
    texts = {}
    for name, value in asdict(options).items():
        if isinstance(value, bool):
            texts[name] = "true" if value else "false"
        else:
            texts[name] = str(value)
    return texts


def load_options(krita: Any) -> Options:
    """Read the options stored by the last run (Krita.readSetting, group ai_remove_background)."""
    return options_from_strings(
        {field.name: krita.readSetting(SETTINGS_GROUP, field.name, "") for field in fields(Options)}
    )


def save_options(krita: Any, options: Options) -> None:
    for name, text in options_to_strings(options).items():
        krita.writeSetting(SETTINGS_GROUP, name, text)
