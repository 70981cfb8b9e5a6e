"""A strict parser of the Prometheus text exposition format (version 0.0.4), for the tests.

It accepts only what a well-formed exposition contains and fails with the offending line
otherwise: HELP and TYPE at most once per family and before its samples, each family's lines
together, valid metric and label names, label values with only the \\\\, \\" and \\n escapes, no
duplicate series, counters named *_total, and histograms whose buckets are cumulative, end in
le="+Inf" and equal their _count. Only the standard library is used.
"""

import math
import re

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class FormatError(AssertionError):
    pass


class Family:
    def __init__(self, name):
        self.name = name
        self.help = None
        self.type = None
        self.samples = []  # (sample name, labels dict, value)


class Exposition:
    """The parsed families by name, in order, with lookups for the tests."""

    def __init__(self, families):
        self.families = families

    def family(self, name):
        assert name in self.families, f"family {name} missing; have {sorted(self.families)}"
        return self.families[name]

    def samples(self, name):
        """Return every (labels, value) of the samples called name, in any family."""
        out = []
        for family in self.families.values():
            out += [(labels, value) for sample, labels, value in family.samples if sample == name]
        return out

    def value(self, name, **labels):
        """Return the value of the one sample called name with exactly these labels."""
        found = [value for got, value in self.samples(name) if got == labels]
        assert len(found) == 1, (f"expected one sample {name}{labels}, found {len(found)}; "
                                 f"samples of {name}: {self.samples(name)[:20]}")
        return found[0]

    def label_values(self, name, label):
        return {labels.get(label) for labels, _ in self.samples(name)}


def _fail(number, line, why):
    raise FormatError(f"line {number}: {why}: {line!r}")


def _unescape(text, number, line, allow_quote):
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                _fail(number, line, "backslash at the end of a value")
            nxt = text[i + 1]
            if nxt == "\\":
                out.append("\\")
            elif nxt == "n":
                out.append("\n")
            elif nxt == '"' and allow_quote:
                out.append('"')
            else:
                _fail(number, line, f"invalid escape \\{nxt}")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _parse_labels(text, number, line):
    """Parse 'a="x",b="y"' (the text between the braces) into a dict."""
    labels = {}
    i = 0
    while i < len(text):
        match = LABEL_NAME_RE.match(text, i)
        if not match:
            _fail(number, line, f"invalid label name at {text[i:i + 20]!r}")
        name = match.group(0)
        if name.startswith("__"):
            _fail(number, line, f"label name {name} is reserved")
        i = match.end()
        if text[i:i + 2] != '="':
            _fail(number, line, f"expected =\" after label {name}")
        i += 2
        start = i
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            _fail(number, line, f"unterminated value of label {name}")
        if name in labels:
            _fail(number, line, f"label {name} appears twice")
        labels[name] = _unescape(text[start:i], number, line, allow_quote=True)
        i += 1
        if i < len(text):
            if text[i] != ",":
                _fail(number, line, f"expected ',' after the value of label {name}")
            i += 1
            if i == len(text):
                _fail(number, line, "trailing comma in the labels")
    return labels


def _parse_value(text, number, line):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        _fail(number, line, f"invalid sample value {text!r}")
    return float(text)


def _split_sample(line, number):
    match = NAME_RE.match(line)
    if not match:
        _fail(number, line, "invalid metric name")
    name = match.group(0)
    rest = line[match.end():]
    labels = {}
    if rest.startswith("{"):
        # The labels end at the first '}' outside a quoted value.
        i, quoted = 1, False
        while i < len(rest):
            if rest[i] == "\\" and quoted:
                i += 2
                continue
            if rest[i] == '"':
                quoted = not quoted
            elif rest[i] == "}" and not quoted:
                break
            i += 1
        if i >= len(rest):
            _fail(number, line, "unterminated label set")
        labels = _parse_labels(rest[1:i], number, line)
        rest = rest[i + 1:]
    if not rest.startswith(" "):
        _fail(number, line, "expected one space before the value")
    parts = rest[1:].split(" ")
    if len(parts) not in (1, 2) or "" in parts:
        _fail(number, line, "expected a value and an optional timestamp")
    value = _parse_value(parts[0], number, line)
    if len(parts) == 2 and not re.fullmatch(r"-?\d+", parts[1]):
        _fail(number, line, "invalid timestamp")
    return name, labels, value


def _family_of(sample, families):
    """Return the family name a sample name belongs to, or the sample name itself."""
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix):
            base = sample[: -len(suffix)]
            if base in families and families[base].type in ("histogram", "summary"):
                return base
    return sample


def _check_histogram(family):
    series = {}
    for sample, labels, value in family.samples:
        key_labels = {k: v for k, v in labels.items() if k != "le"}
        key = tuple(sorted(key_labels.items()))
        entry = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if sample == family.name + "_bucket":
            assert "le" in labels, f"{sample}{labels} has no le label"
            entry["buckets"].append((_parse_value(labels["le"], 0, labels["le"]), value))
        elif sample == family.name + "_sum":
            assert "le" not in labels, f"{sample} has an le label"
            entry["sum"] = value
        elif sample == family.name + "_count":
            assert "le" not in labels, f"{sample} has an le label"
            entry["count"] = value
        else:
            raise FormatError(f"sample {sample} does not belong to histogram {family.name}")
    for key, entry in series.items():
        buckets = entry["buckets"]
        where = f"histogram {family.name}{dict(key)}"
        assert buckets, f"{where} has no buckets"
        assert entry["sum"] is not None, f"{where} has no _sum"
        assert entry["count"] is not None, f"{where} has no _count"
        bounds = [bound for bound, _ in buckets]
        assert bounds == sorted(bounds), f"{where}: bucket bounds not increasing: {bounds}"
        assert len(set(bounds)) == len(bounds), f"{where}: repeated bucket bounds: {bounds}"
        assert bounds[-1] == math.inf, f"{where}: last bucket is not le=\"+Inf\""
        counts = [count for _, count in buckets]
        assert all(a <= b for a, b in zip(counts, counts[1:])), \
            f"{where}: buckets are not cumulative: {counts}"
        assert counts[-1] == entry["count"], \
            f"{where}: +Inf bucket {counts[-1]} differs from _count {entry['count']}"
        assert entry["sum"] >= 0, f"{where}: negative _sum"


def _check_family(family):
    assert family.help is not None, f"family {family.name} has no HELP line"
    assert family.type is not None, f"family {family.name} has no TYPE line"
    if family.type == "counter":
        assert family.name.endswith("_total"), f"counter {family.name} does not end in _total"
        for sample, _, value in family.samples:
            assert sample == family.name, f"counter sample {sample} in family {family.name}"
            assert value >= 0, f"counter {sample} is negative"
    elif family.type == "gauge":
        for sample, _, _ in family.samples:
            assert sample == family.name, f"gauge sample {sample} in family {family.name}"
    elif family.type == "histogram":
        _check_histogram(family)


def parse(text):
    """Parse an exposition strictly and return an Exposition; raises FormatError."""
    if not text.endswith("\n"):
        raise FormatError("the exposition does not end with a newline")
    families = {}
    order = []  # family names in the order their lines appear
    closed = set()
    seen_series = set()

    def enter(name, number, line):
        if order and order[-1] == name:
            return families[name]
        if name in closed or name in families and families[name].samples:
            _fail(number, line, f"lines of family {name} are not together")
        if order:
            closed.add(order[-1])
        order.append(name)
        return families.setdefault(name, Family(name))

    for number, line in enumerate(text[:-1].split("\n"), start=1):
        if line == "":
            _fail(number, line, "empty line")
        if line.startswith("#"):
            match = re.fullmatch(r"# (HELP|TYPE) (\S+) ?(.*)", line)
            if not match:
                _fail(number, line, "a comment that is neither HELP nor TYPE")
            kind, name, rest = match.groups()
            if not NAME_RE.fullmatch(name):
                _fail(number, line, "invalid metric name")
            family = enter(name, number, line)
            if family.samples:
                _fail(number, line, f"{kind} of {name} after its samples")
            if kind == "HELP":
                if family.help is not None:
                    _fail(number, line, f"second HELP for {name}")
                family.help = _unescape(rest, number, line, allow_quote=False)
            else:
                if family.type is not None:
                    _fail(number, line, f"second TYPE for {name}")
                if rest not in TYPES:
                    _fail(number, line, f"unknown type {rest!r}")
                family.type = rest
            continue
        sample, labels, value = _split_sample(line, number)
        family = enter(_family_of(sample, families), number, line)
        key = (sample, tuple(sorted(labels.items())))
        if key in seen_series:
            _fail(number, line, "duplicate series")
        seen_series.add(key)
        family.samples.append((sample, labels, value))

    try:
        for family in families.values():
            _check_family(family)
    except AssertionError as err:
        raise FormatError(str(err)) from None
    return Exposition(families)
