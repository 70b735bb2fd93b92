"""The scorers of the score stage, by the name `--scorers` and `scorer_versions` use."""
from udfs.scorers.aesthetic import AestheticScorer
from udfs.scorers.base import Scorer
from udfs.scorers.luma import LumaScorer
from udfs.scorers.motion import MotionScorer
from udfs.scorers.nsfw import NsfwScorer
from udfs.scorers.ocr import OcrScorer
from udfs.scorers.watermark import WatermarkScorer

SCORERS: dict[str, type[Scorer]] = {
    scorer.name: scorer
    for scorer in (AestheticScorer, WatermarkScorer, OcrScorer, MotionScorer, NsfwScorer, LumaScorer)
}

__all__ = ["SCORERS", "Scorer"]
