"""Real fMRI data: the Narratives dataset (OpenNeuro ds002345) metadata and images."""
from .layout import (SAME_STORY, Narratives, Scan, Story, find_stories, find_story, load_dataset, same_story, split_commas,
                     story_named, tells_story, to_trs)
from .narratives import (DERIVATIVES, SPACE_VERTICES, BoldData, BoldReader, MissingImage, read_scans,
                         read_surface, read_volume, surface_paths, trim_to_story, volume_paths)

__all__ = ["SAME_STORY", "Narratives", "Scan", "Story", "find_stories", "find_story", "load_dataset", "same_story",
           "split_commas", "story_named", "tells_story", "to_trs", "DERIVATIVES", "SPACE_VERTICES", "BoldData", "BoldReader", "MissingImage", "read_scans",
           "read_surface", "read_volume", "surface_paths", "trim_to_story", "volume_paths"]
