"""AMI individual-headset (IHM) eval set, listed from the manual NXT annotations.

``AMI`` holds the audio, ``amicorpus/<MTG>/audio/<MTG>.Headset-<n>.wav`` (16 kHz; or
``<MTG>/audio/`` directly under it, as Kaldi's download lays it out), and the manual annotations
``ami_public_manual_1.6.2/`` (or that zip, read in place, or Kaldi's unzipped ``annotations/``):

    corpusResources/meetings.xml    <meeting observation=MTG><speaker nxt_agent=A global_name=FEO070 channel=n/>
    segments/<MTG>.<A>.segments.xml <segment transcriber_start transcriber_end><nite:child href=
                                        "<MTG>.A.words.xml#id(<MTG>.A.words0)..id(<MTG>.A.words9)"/>
    words/<MTG>.<A>.words.xml       <w nite:id starttime endtime [punc="true"]>text</w>, <vocalsound/>, ...

The eval set is the full-corpus-ASR partition's 16 meetings (Kaldi's s5b, lhotse) found in
meetings.xml, segmented as Kaldi's s5b does: a manual segment spans its elements' times, is split
at sentence ends ("." "?", at their times) and sentences over 30 words at the comma nearest
their middle; the text is the segment's ``<w>`` words, punctuation left out. Utterance ids are
Kaldi's ``AMI_<MTG>_H0<n>_<speaker>_<start cs>_<end cs>``, speaker ``AMI_<MTG>_H0<n>_<speaker>``;
audio is the speaker's headset n. lhotse's ``prepare_ami`` maps annotations to a headset by the
file's rank among the meeting's headset files (not meetings.xml's channel), keeps only the words
timed inside the transcriber times (not the segment's children), drops segments that run past
the recording's end and extracts the zip into the corpus folder, so the XML is read here.
"""

import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from xml.parsers import expat

from espnet_omni.corpora.audio import AudioError, AudioFile
from espnet_omni.corpora.prepare import CorpusError, CorpusFormatError, CorpusNotFound, Listing, Segment, require

EVAL_MEETINGS = tuple(f"{session}{part}" for session in ("EN2002", "ES2004", "IS1009", "TS3003") for part in "abcd")
ANNOTATIONS = ("ami_public_manual_1.6.2", "ami_public_manual_1.6.2.zip", "annotations")
SENTENCE_END = (".", "?")
MAX_WORDS = 30  # Kaldi's ami_split_segments.pl splits longer sentences at commas
_HREF = re.compile(r"^([^#]+)#id\(([^)]+)\)(?:\.\.id\(([^)]+)\))?$")


@dataclass
class Node:
    tag: str
    attrs: Dict[str, str]
    path: Path  # the file it is in, for messages
    line: int
    text: str = ""
    children: List["Node"] = field(default_factory=list)


class Annotations:
    """The annotation files, from a folder or from the zip as distributed."""

    def __init__(self, root: Path):
        for name in ANNOTATIONS:
            self.path = Path(root) / name
            if self.path.exists():
                break
        else:
            raise CorpusNotFound(Path(root) / ANNOTATIONS[0], "the AMI manual annotations (or its .zip)")
        self.zip = zipfile.ZipFile(self.path) if self.path.is_file() else None
        self.prefix = ""
        if self.zip is not None:  # the zip has no top folder; tolerate a repacked one that has
            meetings = [n for n in self.zip.namelist() if n.endswith("corpusResources/meetings.xml")]
            self.prefix = meetings[0][: -len("corpusResources/meetings.xml")] if meetings else ""
        self.read_files: List[Path] = [self.path] if self.zip is not None else []

    def where(self, rel: str) -> Path:
        return self.path / rel

    def exists(self, rel: str) -> bool:
        if self.zip is None:
            return (self.path / rel).is_file()
        return self.prefix + rel in self.zip.NameToInfo

    def names(self, folder: str, pattern: str) -> List[str]:
        if self.zip is None:
            return sorted(f"{folder}/{p.name}" for p in (self.path / folder).glob(pattern))
        rx = re.compile(re.escape(self.prefix + folder + "/") + re.escape(pattern).replace(r"\*", "[^/]*") + "$")
        return sorted(n[len(self.prefix):] for n in self.zip.namelist() if rx.match(n))

    def xml(self, rel: str, what: str) -> Node:
        """The root element of an annotation file, with each element's line number."""
        if not self.exists(rel):
            raise CorpusNotFound(self.where(rel), what)
        if self.zip is None:
            self.read_files.append(self.where(rel))
            data = self.where(rel).read_bytes()
        else:
            data = self.zip.read(self.prefix + rel)
        return parse_xml(data, self.where(rel))


def parse_xml(data: bytes, path: Path) -> Node:
    parser = expat.ParserCreate()
    stack: List[Node] = [Node("", {}, path, 0)]

    def start(tag, attrs):
        node = Node(tag, attrs, path, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag):
        stack.pop()

    def text(data):
        stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        message = f"expected well-formed XML ({expat.errors.messages[err.code]})"
        raise CorpusFormatError(path, err.lineno, message) from None
    return stack[0].children[0]


def _time(node: Node, name: str) -> Optional[float]:
    value = node.attrs.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise CorpusFormatError(node.path, node.line, f"expected a time in seconds in {name}='{value}'") from None


def read_speakers(annotations: Annotations) -> Dict[Tuple[str, str], Tuple[str, int]]:
    """(meeting, letter) -> (global speaker name, headset channel) from meetings.xml."""
    rel = "corpusResources/meetings.xml"
    speakers = {}
    for meeting in annotations.xml(rel, "the AMI meetings list").children:
        for speaker in meeting.children:
            try:
                key = meeting.attrs["observation"], speaker.attrs["nxt_agent"]
                speakers[key] = speaker.attrs["global_name"], int(speaker.attrs["channel"])
            except (KeyError, ValueError):
                raise CorpusFormatError(
                    annotations.where(rel), speaker.line,
                    "expected <speaker nxt_agent=.. global_name=.. channel=<n>> in <meeting observation=..>",
                ) from None
    return speakers


class Words:
    """Words files, loaded once each: element ids in document order, for NXT id ranges."""

    def __init__(self, annotations: Annotations):
        self.annotations = annotations
        self.files: Dict[str, Tuple[List[Node], Dict[str, int]]] = {}

    def span(self, href: str, segments_file: Path, line: int) -> List[Node]:
        match = _HREF.match(href)
        if not match:
            raise CorpusFormatError(segments_file, line, f"expected href='<file>#id(<id>)..id(<id>)', got '{href}'")
        name, first, last = match.group(1), match.group(2), match.group(3) or match.group(2)
        if name not in self.files:
            root = self.annotations.xml(f"words/{name}", f"the words file that {segments_file}:{line} points to")
            nodes = root.children
            self.files[name] = nodes, {n.attrs.get("nite:id"): i for i, n in enumerate(nodes)}
        nodes, index = self.files[name]
        if first not in index or last not in index or index[first] > index[last]:
            raise CorpusFormatError(segments_file, line, f"expected ids {first}..{last} in words/{name}, in order")
        return nodes[index[first]: index[last] + 1]


def sentences(elements: List[Node], start: float, end: float) -> List[Tuple[float, float, List[str]]]:
    """The utterances of one manual segment: (start, end, words), split as Kaldi's s5b does."""
    pieces = []
    begin, words, commas = start, [], []
    for node in elements:
        if node.tag != "w":
            continue
        text = node.text.strip()
        if node.attrs.get("punc") != "true":
            words.append(text)
            continue
        at = _time(node, "starttime")
        if at is None:
            continue
        if text in SENTENCE_END:
            pieces.append((begin, at, words, commas))
            begin, words, commas = at, [], []
        else:
            commas.append((len(words), at))
    pieces.append((begin, end, words, commas))
    return [u for piece in pieces if piece[2] for u in _split_long(*piece)]


def _split_long(start, end, words, commas):
    if len(words) <= MAX_WORDS:
        return [(start, end, words)]
    inner = [(i, t) for i, t in commas if start < t < end and 0 < i < len(words)]
    if not inner:
        return [(start, end, words)]
    i, at = min(inner, key=lambda c: abs(c[1] - (start + end) / 2))
    return _split_long(start, at, words[:i], [c for c in commas if c[0] < i]) + _split_long(
        at, end, words[i:], [(j - i, t) for j, t in commas if j > i]
    )


def list_meeting_speaker(annotations, words, rel, meeting, speaker, channel, audio) -> List[Segment]:
    path = annotations.where(rel)
    try:
        with AudioFile(audio) as recording:
            duration = recording.duration  # aligned words can run past the end of the headset recording
    except AudioError as err:
        raise CorpusError(str(err)) from err
    spk = f"AMI_{meeting}_H0{channel}_{speaker}"
    out = []
    for segment in annotations.xml(rel, "").children:
        if segment.tag != "segment":
            continue
        elements = [e for child in segment.children if child.tag == "nite:child"
                    for e in words.span(child.attrs.get("href", ""), path, child.line)]
        times = [t for e in elements for t in (_time(e, "starttime"), _time(e, "endtime")) if t is not None]
        start = _time(segment, "starttime")
        end = _time(segment, "endtime")
        if start is None or end is None:  # NXT's inherited times: those of the segment's elements
            if not times:
                continue
            start, end = min(times), max(times)
        for begin, finish, text in sentences(elements, start, end):
            begin_cs, end_cs = round(begin * 100), round(min(finish, duration) * 100)
            if end_cs <= begin_cs:
                if begin >= duration:
                    logging.warning("%s:%d: segment starts after the end of %s; left out", path, segment.line, audio)
                continue
            out.append(Segment(
                utt_id=f"{spk}_{begin_cs:07d}_{end_cs:07d}", speaker=spk, audio=audio,
                text=" ".join(text), start=begin_cs / 100, end=end_cs / 100,
            ))
    return out


def list_ihm_eval(roots: Sequence[Path]) -> Listing:
    root = require(Path(roots[0]), "the AMI folder")
    annotations = Annotations(root)
    speakers = read_speakers(annotations)
    meetings = [m for m in EVAL_MEETINGS if any(key[0] == m for key in speakers)]
    if not meetings:
        where = annotations.where("corpusResources/meetings.xml")
        raise CorpusFormatError(where, 0, f"expected the eval meetings {' '.join(EVAL_MEETINGS)}")
    words = Words(annotations)
    segments: List[Segment] = []
    for meeting in meetings:
        audio_dir = root / "amicorpus" / meeting / "audio"
        if not audio_dir.is_dir() and (root / meeting / "audio").is_dir():
            audio_dir = root / meeting / "audio"
        for rel in annotations.names("segments", f"{meeting}.*.segments.xml"):
            letter = rel.split("/")[-1].split(".")[1]
            if (meeting, letter) not in speakers:
                raise CorpusError(f"{annotations.where(rel)}: speaker {letter} of {meeting} is not in meetings.xml")
            name, channel = speakers[meeting, letter]
            audio = require(audio_dir / f"{meeting}.Headset-{channel}.wav", f"the headset of {meeting}'s {letter}")
            segments += list_meeting_speaker(annotations, words, rel, meeting, name, channel, audio)
    unique = {(s.utt_id, s.text): s for s in segments}  # Kaldi drops repeated entries (uniq)
    return Listing(list(unique.values()), annotations.read_files)
