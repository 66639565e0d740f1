"""Tests of the soak judge: breathing passes, a leak fails.

Run: python3 -m unittest discover -s scripts/lib -p 'test_*.py'
"""
import math
import random
import unittest

from soak_judge import judge, slope


def series(minutes=12, every=10, base=10.0, wobble=0.7, leak_mib_per_min=0.0, seed=1):
    rnd = random.Random(seed)
    out = []
    for i in range(minutes * 60 // every + 1):
        t = i * every
        breathing = wobble * math.sin(t / 47.0) + rnd.uniform(-0.2, 0.2)
        out.append((t, base + breathing + leak_mib_per_min * t / 60, 2010))
    return out


class Judge(unittest.TestCase):
    def test_slope_of_a_line(self):
        self.assertAlmostEqual(slope([0, 1, 2, 3], [1, 3, 5, 7]), 2.0)
        self.assertEqual(slope([5], [1]), 0.0)

    def test_the_measured_breathing_passes(self):
        # The run issue 29 quotes: 9.2-10.6 MiB, median 10.2, no trend.
        for seed in range(20):
            ok, s = judge(series(seed=seed), warm_s=60)
            self.assertTrue(ok, s)
            self.assertLess(s["rss_min"], 9.6)
            self.assertGreater(s["rss_max"], 10.5)

    def test_a_leak_of_a_quarter_mib_a_minute_fails(self):
        ok, s = judge(series(leak_mib_per_min=0.25), warm_s=60)
        self.assertFalse(ok)
        self.assertEqual(s["reason"], "RSS grows")

    def test_a_steady_leak_under_the_breathing_amplitude_per_sample_fails(self):
        # 3 KiB per 10 s sample: invisible sample to sample, 2 MiB over 12 min.
        ok, s = judge(series(leak_mib_per_min=0.18, wobble=0.7), warm_s=60)
        self.assertFalse(ok, s)

    def test_one_spike_at_the_end_is_not_a_leak(self):
        samples = series()
        samples[-1] = (samples[-1][0], 14.0, 2010)
        ok, s = judge(samples, warm_s=60)
        self.assertTrue(ok, s)

    def test_growing_descriptors_fail(self):
        samples = [(t, r, fds + i // 10) for i, (t, r, fds) in enumerate(series())]
        ok, s = judge(samples, warm_s=60)
        self.assertFalse(ok)
        self.assertEqual(s["reason"], "descriptors grow")

    def test_too_few_samples_fail(self):
        ok, _ = judge(series(minutes=1), warm_s=55)
        self.assertFalse(ok)


if __name__ == "__main__":
    unittest.main()
