import sys; sys.path.insert(0, '/tmp/gt')
from edit import Edit
e = Edit('/tmp/gt/draft/upfall_Activity6_Trial1Cam1.csv')
e.remap({1: 1, 3: 1, 5: 1, 7: 1, 8: 1, 12: 1, 14: 1, 4: 5, 9: 6, 11: 7})
rough = (0, 200, 50, 480)  # an arm at the left border while entering
# (last frame at least half in view, last frame with any of him in view, first with any, first at least half)
transitions = [(22, 28, 46, 52), (154, 160, 186, 190), (296, 303, 326, 330), (438, 444, 464, 472),
               (599, 606, 632, 639), (739, 747, 759, 764)]
for half_out, gone, enters, half_in in transitions:
    e.ensure(1, half_out)
    e.state_range(1, half_out + 1, gone, 'ignore')
    e.drop(1, [f for f in e.frames(1) if gone < f < half_in])
    e.out(1, gone + 1)
    e.put(1, enters, rough, 'ignore')
    e.ensure(1, half_in)
# entry 2: the first skeletons are misplaced; the walker is cut by the left border
e.put(1, 190, (0, 200, 110, 480))
for f in (194, 196):
    e.ensure(1, f); b = e.box(1, f); e.put(1, f, (0, b[1], b[2], b[3]))
e.write('/work/wt18/groundtruth/keyframes/upfall/Activity6/Trial1Cam1.csv')
print(e.frames(1))
