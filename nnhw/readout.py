"""What the pictured weights do, read off the numbers: the sentences beside 4.1.6, 4.2.6 and 6's pictures.

For 8 hidden units: where their input weights lie and which digits their output
weights vote for; for a CNN's first-layer filters: the edge direction each one
detects; for softmax regression: the class templates. A run the report keeps
without its checkpoint keeps these sentences in readout.json instead (nnhw.inputs).
"""

import math

from .data import IMAGE_SIDE, N_CLASSES


def _centre_share(w):
    """Share of a weight picture's |w| mass in the central 20x20 box (51% of the pixels), where
    MNIST centres its digits."""
    a = w.abs().reshape(IMAGE_SIDE, IMAGE_SIDE)
    m = (IMAGE_SIDE - 20) // 2
    return (a[m : m + 20, m : m + 20].sum() / a.sum().clamp_min(1e-30)).item()


def hidden_unit_readout(params, n=8):
    """For hidden units 1..n of the first layer: where their input weights lie, and (one hidden layer)
    which digits their output weights vote for."""
    w1 = params["W1"].float()
    votes = params["W2"].float() if params["W2"].shape[0] == N_CLASSES else None  # only when layer 2 is the output
    units = []
    for j in range(n):
        u = dict(unit=j + 1, centre=_centre_share(w1[j]), positive=(w1[j].clamp_min(0).sum() / w1[j].abs().sum()).item())
        if votes is not None:
            col = votes[:, j]
            u.update(top=int(col.argmax()), top_weight=col.max().item(), bottom=int(col.argmin()), bottom_weight=col.min().item())
        units.append(u)
    return units


def filter_readout(params, n=8):
    """For the first n first-layer filters: the dominant gradient direction (structure tensor) and how
    coherent it is (1: one clean edge, 0: no preferred direction)."""
    out = []
    for j, f in enumerate(params["Wc1"].float().mean(dim=1)[:n]):
        gx, gy = (f[:, 1:] - f[:, :-1])[:-1], (f[1:, :] - f[:-1, :])[:, :-1]
        jxx, jyy, jxy = (gx * gx).sum().item(), (gy * gy).sum().item(), (gx * gy).sum().item()
        angle = math.degrees(0.5 * math.atan2(2 * jxy, jxx - jyy)) % 180  # 0: left-right change, 90: up-down
        coherence = math.hypot(jxx - jyy, 2 * jxy) / max(jxx + jyy, 1e-30)
        edge = ["a vertical edge", "a diagonal edge", "a horizontal edge", "a diagonal edge"][int(((angle + 22.5) % 180) // 45)]
        out.append(dict(unit=j + 1, angle=angle, coherence=coherence, edge=edge, mean_sign=(f.sum() / f.abs().sum()).item()))
    return out


def readout_text(params):
    """Lines describing the pictured weights, and one summary sentence, all from the numbers."""
    if "Wc1" in params:
        rows = filter_readout(params)
        lines = [
            f"filter {r['unit']}: " + (f"{r['edge']} (gradient at {r['angle']:.0f} degrees, coherence {r['coherence']:.2f})"
                                       if r["coherence"] >= 0.5 else f"no single direction (coherence {r['coherence']:.2f})")
            + (f"; {'mostly positive' if r['mean_sign'] > 0 else 'mostly negative'}, a blob detector" if abs(r["mean_sign"]) > 0.5 else "")
            for r in rows
        ]
        oriented = sum(r["coherence"] >= 0.5 for r in rows)
        summary = (f"{oriented} of the {len(rows)} filters have one clear direction (coherence at least 0.5): they respond to stroke edges "
                   f"at that angle, as the first layer of a CNN usually learns; the others respond to blobs or corners.")
        return lines, summary
    if "W2" not in params:  # softmax regression: row l is the template of class l
        w = params["W1"].float()
        shares = [_centre_share(w[l]) for l in range(w.shape[0])]
        lines = [f"digit {l}: {100 * s:.0f}% of |w| in the central 20x20 box" for l, s in enumerate(shares)]
        summary = (f"Row l of W scores class l, so each picture is a template of digit l: bright where the digit's strokes push "
                   f"its score up, dark where strokes of other digits do. Between {100 * min(shares):.0f}% and {100 * max(shares):.0f}% "
                   f"of each template's weight mass lies in the central 20x20 box, where the digits are.")
        return lines, summary
    rows = hidden_unit_readout(params)
    lines = []
    for r in rows:
        text = f"unit {r['unit']}: {100 * r['centre']:.0f}% of |w| in the central 20x20 box, {100 * r['positive']:.0f}% of it positive"
        if "top" in r:
            text += f"; votes for digit {r['top']} ({r['top_weight']:+.2f}) and against digit {r['bottom']} ({r['bottom_weight']:+.2f})"
        lines.append(text)
    centre = [r["centre"] for r in rows]
    summary = (f"The pictures are not whole digits. Each unit weighs {100 * min(centre):.0f}-{100 * max(centre):.0f}% of its input mass "
               f"on the central 20x20 box (51% of the pixels), in bright (positive) and dark (negative) patches: "
               f"it fires for strokes in the bright places and is held back by strokes in the dark ones, a local stroke detector.")
    if "top" in rows[0]:
        summary += (" The output layer turns these detectors into classes: the digit a unit votes for is the one whose strokes "
                    "cover its bright patches, and no unit decides a class on its own.")
    return lines, summary
