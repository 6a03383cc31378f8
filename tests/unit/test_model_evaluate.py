"""evaluate(): partial labels, per-class scores, confusion matrix, JSON form."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import AutoTokenizer

from monitor.learn import evaluate
from monitor.learn.evaluate import score_head
from monitor.model import MultiTaskClassifier, Predictor
from monitor.records import Example


def test_partial_labels_score_each_head_on_its_own_examples(tiny_backbone: Path) -> None:
    torch.manual_seed(0)
    model = MultiTaskClassifier.from_backbone(tiny_backbone)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone))
    examples = [
        Example("oil prices fall", sentiment="negative"),
        Example("stocks rise", sentiment="positive"),
        Example("fed raises rates", sentiment="neutral"),
    ]
    predictor = Predictor(model, tokenizer, "v")
    report = evaluate(predictor, examples)
    assert set(report.heads) == {"sentiment"} and report.examples == 3
    predicted = [s.sentiment for s in predictor.predict([e.text for e in examples])]
    expected = sum(p == e.sentiment for p, e in zip(predicted, examples, strict=True)) / 3
    assert report.heads["sentiment"].accuracy == expected
    assert report.macro_f1 == report.heads["sentiment"].macro_f1
    same = evaluate(model, examples, tokenizer)
    assert same.heads["sentiment"].confusion == report.heads["sentiment"].confusion
    json.dumps(report.to_dict())


def test_no_labelled_examples_gives_no_head(tiny_backbone: Path) -> None:
    model = MultiTaskClassifier.from_backbone(tiny_backbone)
    report = evaluate(model, [], AutoTokenizer.from_pretrained(str(tiny_backbone)))
    assert report.heads == {} and report.examples == 0 and math.isnan(report.macro_f1)
    assert report.to_dict()["macro_f1"] is None


def test_scores_match_hand_computed_values() -> None:
    y_true = ["neg", "neg", "neu", "pos", "pos", "pos"]
    y_pred = ["neg", "pos", "neu", "pos", "pos", "neu"]
    report = score_head("sentiment", y_true, y_pred, ["neg", "neu", "pos"])
    assert report.confusion == ((1, 0, 1), (0, 1, 0), (0, 1, 2))
    neg = report.per_class["neg"]
    assert (neg.precision, neg.recall, neg.support) == (1.0, 0.5, 2)
    assert report.averages["micro"].f1 == report.accuracy == 4 / 6
    assert report.support == 6


def test_unknown_true_label_is_kept_as_an_error_row() -> None:
    report = score_head("topic", ["Crypto", "Macro"], ["Macro", "Macro"], ["Macro", "Earnings"])
    assert report.labels == ("Macro", "Crypto")
    assert report.per_class["Crypto"].recall == 0.0 and report.accuracy == 0.5
