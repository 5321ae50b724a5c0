"""Intent reward: adherence plus content similarity picks the right candidate."""

import numpy as np

from pluralign.data.degradations import degrade
from pluralign.rewards import calibrate as C
from pluralign.rewards.intent import best_of_n, intent_reward, structural_similarity


def test_intent_reward_prefers_adherent_same_scene_candidate():
    photo = C._resize_to(C.load_photo("astronaut"), 64)
    other = C._resize_to(C.load_photo("rocket"), 64)[:64, :64]
    dark = degrade(photo, "underexposure", 0.8, seed=0)
    dark_other = degrade(other, "underexposure", 0.8, seed=0)
    sim = structural_similarity([dark, dark_other], [photo, photo])
    assert sim[0] > 0.8 > sim[1]
    idx, rewards = best_of_n([photo, dark_other, dark], photo, "underexposed")
    assert idx == 2 and rewards[2] > rewards[0] and rewards[2] > rewards[1]
    out = intent_reward([dark, photo], [photo, photo], ["underexposed", "grief"])
    assert out["adheres"][0] == 1 and np.isnan(out["adheres"][1])
    assert out["reward"][1] == out["similarity"][1]
