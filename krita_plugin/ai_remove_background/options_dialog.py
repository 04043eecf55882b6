"""The options dialog shown before each run (PyQt5 widgets only)."""

from __future__ import annotations

from dataclasses import replace

from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .options import (
    BACKGROUND_BLUR,
    BACKGROUND_COLOR,
    BACKGROUNDS,
    BLUR_LIMIT_PIXELS,
    FEATHER_LIMIT_PIXELS,
    GROW_LIMIT_PIXELS,
    MODELS,
    OUTPUT_BACKGROUND,
    OUTPUTS,
    Options,
)


class OptionsDialog(QDialog):
    """Edit a copy of the options. After OK, `options()` returns the result."""

    def __init__(self, options: Options, has_selection: bool, layer_names: list[str], parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setObjectName("ai_remove_background_options")
        self.setWindowTitle("AI Remove Background")
        self._options = replace(options)

        names = ", ".join(f"'{name}'" for name in layer_names)
        intro = QLabel(f"Remove the background of {names}. The model runs on this computer.")
        intro.setWordWrap(True)

        self.model = QComboBox()
        for name, title in MODELS.items():
            self.model.addItem(title, name)
        if options.model not in MODELS:
            self.model.addItem(options.model, options.model)
        self.model.setCurrentIndex(self.model.findData(options.model))

        self.refine = QCheckBox("Refine edges (hair, fur)")
        self.refine.setChecked(options.refine)
        self.refine.setToolTip("Edge-aware upsampling of the model's mask; off gives a plain resize.")

        self.grow = QSpinBox()
        self.grow.setRange(-GROW_LIMIT_PIXELS, GROW_LIMIT_PIXELS)
        self.grow.setSuffix(" px")
        self.grow.setValue(options.grow)
        self.grow.setToolTip("Grow the mask by this many pixels; a negative value shrinks it.")

        self.feather = QSpinBox()
        self.feather.setRange(0, FEATHER_LIMIT_PIXELS)
        self.feather.setSuffix(" px")
        self.feather.setValue(options.feather)
        self.feather.setToolTip("Soften the mask's edge with a Gaussian blur of this radius.")

        self.output = QComboBox()
        for name, title in OUTPUTS.items():
            self.output.addItem(title, name)
        self.output.setCurrentIndex(self.output.findData(options.output))

        self.background = QComboBox()
        for name, title in BACKGROUNDS.items():
            self.background.addItem(title, name)
        self.background.setCurrentIndex(self.background.findData(options.background))

        self.color_button = QPushButton()
        self.color_button.clicked.connect(self._choose_color)
        self._show_color(options.background_color)

        self.blur_radius = QSpinBox()
        self.blur_radius.setRange(1, BLUR_LIMIT_PIXELS)
        self.blur_radius.setSuffix(" px")
        self.blur_radius.setValue(options.blur_radius)

        self.limit_to_selection = QCheckBox("Only inside the current selection")
        self.limit_to_selection.setChecked(options.limit_to_selection and has_selection)
        self.limit_to_selection.setEnabled(has_selection)
        if not has_selection:
            self.limit_to_selection.setToolTip("There is no selection in this image.")

        self.refine_from_mask = QCheckBox("Refine the layer's transparency mask")
        self.refine_from_mask.setChecked(options.refine_from_mask)
        self.refine_from_mask.setToolTip(
            "Keep the black and white parts of the mask you painted and solve only the grey parts "
            "between them. The result replaces that mask. Layers without a transparency mask are "
            "computed from scratch."
        )

        form = QFormLayout()
        form.addRow("Model:", self.model)
        form.addRow("", self.refine)
        form.addRow("", self.refine_from_mask)
        form.addRow("Grow or shrink:", self.grow)
        form.addRow("Feather:", self.feather)
        form.addRow("Output:", self.output)
        form.addRow("New background:", self.background)
        form.addRow("Background colour:", self.color_button)
        form.addRow("Blur radius:", self.blur_radius)
        form.addRow("", self.limit_to_selection)

        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(buttons)

        self.output.currentIndexChanged.connect(self._update_enabled)
        self.background.currentIndexChanged.connect(self._update_enabled)
        self._update_enabled()

    def _show_color(self, color: str) -> None:
        self._options.background_color = color
        self.color_button.setText(color)
        self.color_button.setStyleSheet(f"background-color: {color}; color: {self._contrasting(color)};")

    @staticmethod
    def _contrasting(color: str) -> str:
        return "#000000" if QColor(color).lightness() > 127 else "#ffffff"

    def _choose_color(self) -> None:
        chosen = QColorDialog.getColor(QColor(self._options.background_color), self, "Background colour")
        if chosen.isValid():
            self._show_color(chosen.name())

    def _update_enabled(self) -> None:
        with_background = self.output.currentData() == OUTPUT_BACKGROUND
        self.background.setEnabled(with_background)
        self.color_button.setEnabled(with_background and self.background.currentData() == BACKGROUND_COLOR)
        self.blur_radius.setEnabled(with_background and self.background.currentData() == BACKGROUND_BLUR)

    def options(self) -> Options:
        return replace(
            self._options,
            model=self.model.currentData(),
            refine=self.refine.isChecked(),
            refine_from_mask=self.refine_from_mask.isChecked(),
            grow=self.grow.value(),
            feather=self.feather.value(),
            output=self.output.currentData(),
            background=self.background.currentData(),
            blur_radius=self.blur_radius.value(),
            limit_to_selection=self.limit_to_selection.isChecked() if self.limit_to_selection.isEnabled()
            else self._options.limit_to_selection,
        )
