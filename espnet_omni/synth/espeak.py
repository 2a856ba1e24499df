"""eSpeak NG speech synthesis through the shared library bundled by ``espeakng-loader``.

The library keeps state between utterances and seeds breath noise from the clock, so the same
text can come out differently in one process. Synthesis therefore runs in a small server
process (this file run as a script: it imports nothing but the standard library) that
initialises the library once, never synthesises itself, and synthesises every request in a
freshly forked child after ``espeak_ng_SetRandSeed``: the same request always gives the same
PCM, whatever ran before it. Forking that lean process costs about a millisecond, where
forking a process that has imported torch costs tens.
"""

import ctypes
import json
import os
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

AUDIO_OUTPUT_SYNCHRONOUS = 2
CHARS_UTF8 = 1
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4
_FRAME = struct.Struct("<BQ")  # status (0 ok, 1 error), payload length


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    Attributes:
        language: eSpeak voice name, e.g. "en-us", "en-GB-scotland".
        variant: voice variant, e.g. "m3", "f2", "klatt4" ("" for none).
        pitch: base pitch 0-100.
        pitch_range: pitch range 0-100.
        rate: words per minute.
    """

    language: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language

    @property
    def speaker_id(self) -> str:
        return f"{self.language}_{self.variant or 'base'}_p{self.pitch}_r{self.pitch_range}_w{self.rate}"


class _Engine:
    """The ctypes binding; lives only in the server process."""

    def __init__(self, library: str, data_parent: str):
        self.lib = ctypes.CDLL(library)
        self.sample_rate = self.lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent.encode(), 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialise with data in {data_parent}")
        self.chunks = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )

        def collect(wav, num_samples, events):
            if num_samples > 0:
                self.chunks.append(ctypes.string_at(wav, num_samples * 2))
            return 0

        self.callback = callback_type(collect)  # the library keeps the pointer: keep it alive
        self.lib.espeak_SetSynthCallback(self.callback)
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]

    def synthesize(self, text: str, voice: Voice, seed: int) -> bytes:
        # The voice call resets the parameters: set it first.
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice '{voice.name}'")
        for param, value in ((PARAM_RATE, voice.rate), (PARAM_PITCH, voice.pitch), (PARAM_RANGE, voice.pitch_range)):
            self.lib.espeak_SetParameter(param, value, 0)
        self.lib.espeak_ng_SetRandSeed(seed)
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        return b"".join(self.chunks)


def _serve(library: str, data_parent: str) -> None:
    engine = _Engine(library, data_parent)
    out = sys.stdout.buffer
    out.write(_FRAME.pack(0, 4) + struct.pack("<i", engine.sample_rate))
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                voice = Voice(**request["voice"])
                status, payload = 0, engine.synthesize(request["text"], voice, request["seed"])
            except Exception as err:
                status, payload = 1, str(err).encode()
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(_FRAME.pack(status, len(payload)) + payload)
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            frame = pipe.read()
        _, exit_status = os.waitpid(pid, 0)
        if exit_status != 0 or len(frame) < _FRAME.size:
            message = f"synthesis process died ({exit_status}) for {request['text']!r}".encode()
            frame = _FRAME.pack(1, len(message)) + message
        out.write(frame)
        out.flush()


class Synthesizer:
    """Client of a synthesis server: ``synthesize(text, voice, seed) -> int16 PCM bytes``."""

    def __init__(self):
        # Here, not at the top: run as the server script this file imports only the stdlib.
        from espnet_omni.extras import require_extra

        espeakng_loader = require_extra("espeakng_loader", "Synthesising the generated corpus")
        self._proc = subprocess.Popen(
            [sys.executable, "-I", __file__, espeakng_loader.get_library_path(),
             str(Path(espeakng_loader.get_data_path()).parent)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.sample_rate = struct.unpack("<i", self._read_frame())[0]

    def _read_frame(self) -> bytes:
        header = self._proc.stdout.read(_FRAME.size)
        if len(header) < _FRAME.size:
            raise RuntimeError("the eSpeak NG synthesis server stopped")
        status, length = _FRAME.unpack(header)
        payload = self._proc.stdout.read(length)
        if status:
            raise ValueError(payload.decode())
        return payload

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> bytes:
        """Synthesise ``text``; int16 little-endian PCM at ``sample_rate`` Hz."""
        request = {"text": text, "voice": asdict(voice), "seed": int(seed)}
        self._proc.stdin.write((json.dumps(request) + "\n").encode())
        self._proc.stdin.flush()
        return self._read_frame()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
