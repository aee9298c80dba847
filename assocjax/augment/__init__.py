"""Associative-memory augmentation of stories: the file format, manual annotations,
sentence boundaries, model/endpoint-generated associations, the random controls (length-matched
other-story text, or the same texts shuffled across anchors),
(for synthetic data) the true augmentation, the part of speech of inserted words and the subsets
by it (`augment.pos`), and the story lookup and summary of the CLI."""
from .format import (FORMAT, LEVELS, SOURCES, UPOS, VERSION, Augmentation, Insertion, augmented_reading,
                     augmented_words, from_json, load, save, story_hash, to_json, validate)
from .manual import import_json, parse_inline
from .random_control import KINDS, POSITIONS, pool_from_alignments, random_match, shuffled_control, token_count
from .sentences import DEFAULT_GAP_S, boundary_source, find_transcript, sentence_ends, story_sentence_ends
from .chat import ChatClient, ChatError
from .replies import ReplyStore, replies_path
from .generate import ChatGenerator, GenerationError, LMGenerator, generate_augmentation
from .oracle import oracle_augmentation, synthetic_oracle, write_oracle
from .pos import RuleTagger, TaggerUnavailable, load_tagger, split_conditions, tag_augmentation
from .stories import dataset_alignment, load_story
from .summary import summary_text

__all__ = ["FORMAT", "LEVELS", "SOURCES", "UPOS", "VERSION", "Augmentation", "Insertion", "augmented_reading", "augmented_words",
           "from_json", "load", "save", "story_hash", "to_json", "validate", "import_json", "parse_inline", "KINDS", "POSITIONS", "pool_from_alignments", "random_match", "shuffled_control",
           "token_count",
           "DEFAULT_GAP_S", "boundary_source", "find_transcript", "sentence_ends", "story_sentence_ends", "ChatClient",
           "ChatError", "ReplyStore", "replies_path", "ChatGenerator", "GenerationError", "LMGenerator",
           "generate_augmentation", "oracle_augmentation", "synthetic_oracle", "write_oracle", "dataset_alignment",
           "load_story", "summary_text", "RuleTagger", "TaggerUnavailable", "load_tagger", "split_conditions",
           "tag_augmentation"]
