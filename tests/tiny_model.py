"""A tiny randomly initialised BERT classifier with a WordPiece vocabulary trained on the test texts.

Built locally in about a second, the way transformers' own tests build ``BertModelTester``-style
configs, so no test needs a model hub or a downloaded checkpoint.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_tiny_model(
    out_dir: Path,
    texts: list[str],
    labels: tuple[str, ...],
    *,
    vocab_size: int = 500,
    seed: int = 0,
) -> Path:
    """Train a WordPiece vocabulary on ``texts`` and save a 2-layer, hidden-32 BERT classifier.

    Args:
        out_dir: Directory to write ``model.safetensors``, ``config.json`` and the tokenizer files to.
        texts: Corpus the WordPiece vocabulary is trained on.
        labels: Class names in class-index order (become ``id2label``/``label2id``).
        vocab_size: Target WordPiece vocabulary size.
        seed: Seed of the random weight initialisation.

    Returns:
        ``out_dir``.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    if not texts:
        raise ValueError("build_tiny_model needs at least one text to train a vocabulary on")
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(
        texts,
        trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        ),
    )
    pieces = set(wordpiece.get_vocab()) - set(SPECIAL_TOKENS)
    # Every ASCII letter, digit and punctuation mark as a word start and as a continuation piece, so
    # words unseen in training (drifted data, typos) still split into pieces instead of becoming [UNK].
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        pieces.update((char, f"##{char}"))
    # The trainer learns the same pieces every time but numbers them differently from one process to
    # the next; number them in sorted order so the same seed gives the same model in every process.
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *sorted(pieces)])}
    # transformers 5's BertTokenizerFast builds the BERT normaliser, pre-tokeniser and [CLS]/[SEP]
    # template itself from a vocabulary, so hand it the trained vocabulary.
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=128)

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
