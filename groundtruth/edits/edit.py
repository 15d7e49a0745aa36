"""Helpers for hand edits of a keyframes CSV."""
import sys
from pathlib import Path
sys.path.insert(0, '/work/wt18')
from bench.groundtruth import read_keyframes, write_keyframes, Keyframe

class Edit:
    def __init__(self, src):
        self.ks = {(k.person, k.frame): k for k in read_keyframes(Path(src))}
    def remap(self, mapping):
        out = {}
        for (p, f), k in sorted(self.ks.items()):
            if p in mapping and (mapping[p], f) not in out:
                out[(mapping[p], f)] = Keyframe(f, mapping[p], k.box, k.visibility, k.state)
        self.ks = out
    def state(self, person, frames, state):
        for f in frames:
            k = self.ks[(person, f)]
            self.ks[(person, f)] = Keyframe(f, person, k.box, k.visibility, state)
    def put(self, person, frame, box=None, state='in', vis=1.0):
        self.ks[(person, frame)] = Keyframe(frame, person, None if state == 'out' else tuple(map(float, box)), vis, state)
    def out(self, person, frame):
        self.put(person, frame, state='out')
    def drop(self, person, frames):
        for f in frames: self.ks.pop((person, f), None)
    def box(self, person, frame):
        return self.ks[(person, frame)].box
    def frames(self, person):
        return sorted(f for p, f in self.ks if p == person)
    def write(self, dst):
        write_keyframes(Path(dst), self.ks.values())

def _interp(self, person, frame):
    fs = self.frames(person)
    before = [f for f in fs if f <= frame and self.ks[(person, f)].box is not None]
    after = [f for f in fs if f >= frame and self.ks[(person, f)].box is not None]
    if not before: return self.ks[(person, after[0])].box
    if not after: return self.ks[(person, before[-1])].box
    a, b = before[-1], after[0]
    if a == b: return self.ks[(person, a)].box
    t = (frame - a) / (b - a)
    return tuple((1 - t) * p + t * q for p, q in zip(self.ks[(person, a)].box, self.ks[(person, b)].box))

def ensure(self, person, frame, state=None):
    if (person, frame) not in self.ks:
        self.put(person, frame, _interp(self, person, frame), state or 'in')
    elif state:
        self.state(person, [frame], state)

def state_range(self, person, a, b, state):
    self.ensure(person, a); self.ensure(person, b)
    self.state(person, [f for f in self.frames(person) if a <= f <= b], state)

Edit.ensure = ensure
Edit.state_range = state_range
Edit.interp = _interp
