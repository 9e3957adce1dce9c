"""Drives a running Switchyard with the official Python clients, `ollama` and
`openai`, and checks what each call returns, not only that it returned.

Run by tests/clients.rs against `switchyard --demo`, with the interpreter of
the virtual environment that .ci/run fills from requirements.txt:

    check_clients.py --url http://127.0.0.1:8080 --chat-model llama3.1:8b \\
        --models llama3.1:8b,mistral:7b,...

Prints one line per check and exits 1 if any failed, 2 if the installed
client versions are not the pinned ones.

Some checks are of answers Switchyard builds itself (/api/tags, /api/ps,
/v1/models) or of what it accepts before forwarding (/api/show with
`name`), not of the mock.
"""

import argparse
import datetime
import importlib.metadata
import pathlib
import sys
import traceback


def pinned_mismatches():
    """Installed versions that differ from requirements.txt."""
    wrong = []
    requirements = pathlib.Path(__file__).with_name("requirements.txt")
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, version = (part.strip() for part in line.split("==", 1))
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong.append(f"{name}: pinned {version}, installed {installed}")
    return wrong


# Before the imports below, so that a venv without the libraries, or with
# other versions, says what to do instead of failing to import.
if __name__ == "__main__" and pinned_mismatches():
    print("the client libraries are not the pinned versions:", *pinned_mismatches(), sep="\n  ")
    print("run: .venv-clients/bin/pip install -r tests/clients/requirements.txt")
    sys.exit(2)

import httpx  # noqa: E402
import ollama  # noqa: E402
import openai  # noqa: E402

# Generous for the demo's pace (200 ms to the first token, 80 ms between
# tokens) on a loaded machine; a call that takes this long has failed.
TIMEOUT = 60.0


class Checks:
    """The checks, each a method named after the call it makes."""

    def __init__(self, url, chat_model, models):
        self.url = url
        self.model = chat_model
        self.models = models
        self.ollama = ollama.Client(host=url, timeout=TIMEOUT)
        # No retries: a retried failure would pass unseen.
        self.openai = openai.OpenAI(
            base_url=f"{url}/v1", api_key="unused", timeout=TIMEOUT, max_retries=0
        )

    # ---- ollama ----

    def ollama_list(self):
        listed = self.ollama.list().models
        names = [m.model for m in listed]
        expect(set(self.models) <= set(names), f"demo models missing from {names}")
        expect(len(names) == len(set(names)), f"a model listed twice: {names}")

    def ollama_list_details(self):
        # Switchyard answers /api/tags itself, from what the backends
        # listed: their sizes, digests and details must come through.
        for m in self.ollama.list().models:
            expect(m.size and m.size > 0, f"{m.model}: size {m.size}")
            expect(m.digest and len(m.digest) == 64, f"{m.model}: digest {m.digest!r}")
            d = m.details
            expect(d is not None and d.family, f"{m.model}: details {d}")
            expect(d.parameter_size and d.quantization_level, f"{m.model}: details {d}")
            expect(d.format == "gguf", f"{m.model}: format {d.format}")
            expect(
                m.modified_at and m.modified_at.year >= 2020,
                f"{m.model}: modified_at {m.modified_at}",
            )

    def ollama_ps(self):
        loaded = self.ollama.ps().models
        expect(loaded, "nothing loaded")
        now = datetime.datetime.now(datetime.timezone.utc)
        for m in loaded:
            expect(m.model in self.models, f"{m.model} is not a demo model")
            expect(m.size_vram and m.size_vram > 0, f"{m.model}: size_vram {m.size_vram}")
            expect(m.expires_at and m.expires_at > now, f"{m.model}: expires_at {m.expires_at}")
            expect(m.details and m.details.family, f"{m.model}: details {m.details}")

    def ollama_ps_once_per_model(self):
        # The three demo backends all have llama3.1:8b loaded, and
        # `ollama ps` must show it once.
        names = [m.model for m in self.ollama.ps().models]
        expect(len(names) == len(set(names)), f"a model listed twice: {names}")

    def ollama_show(self):
        shown = self.ollama.show(self.model)
        expect(shown.details and shown.details.family, f"details {shown.details}")
        expect(shown.details.parameter_size, f"details {shown.details}")
        expect(shown.capabilities and "completion" in shown.capabilities, f"{shown.capabilities}")
        expect(
            shown.modelinfo and "general.architecture" in shown.modelinfo,
            f"model_info {shown.modelinfo}",
        )
        expect(shown.modified_at is not None, "no modified_at")

    def ollama_show_by_name(self):
        # Older Ollama clients name the model under `name`, which Ollama
        # accepts. (This client library sends `model`, so the request is
        # made by hand.)
        r = httpx.post(f"{self.url}/api/show", json={"name": self.model}, timeout=TIMEOUT)
        expect(r.status_code == 200, f"HTTP {r.status_code}: {r.text}")
        expect(r.json().get("details", {}).get("family"), r.text)

    def ollama_version(self):
        # This client library has no call for /api/version; the ollama CLI
        # and Open WebUI ask it, so it is asked as they do.
        r = httpx.get(f"{self.url}/api/version", timeout=TIMEOUT)
        expect(r.status_code == 200, f"HTTP {r.status_code}: {r.text}")
        version = r.json().get("version", "")
        expect(len(version.split(".")) == 3, f"version {version!r}")

    def ollama_chat(self):
        r = self.ollama.chat(
            model=self.model, messages=[{"role": "user", "content": "hi"}], stream=False
        )
        expect(r.message.role == "assistant", f"role {r.message.role}")
        expect(r.message.content and r.message.content.strip(), "empty answer")
        expect(r.done and r.eval_count and r.eval_count > 0, f"done {r.done}, eval_count {r.eval_count}")

    def ollama_chat_stream(self):
        parts = list(
            self.ollama.chat(
                model=self.model, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        expect(len(parts) >= 3, f"{len(parts)} parts")
        expect(parts[-1].done, "the last part is not done")
        expect(not any(p.done for p in parts[:-1]), "done before the end")
        text = "".join(p.message.content or "" for p in parts)
        expect(text.strip(), "no text streamed")

    def ollama_generate(self):
        r = self.ollama.generate(model=self.model, prompt="why is the sky blue", stream=False)
        expect(r.response and r.response.strip(), "empty response")
        expect(r.done and r.done_reason == "stop", f"done {r.done} {r.done_reason}")
        expect(r.prompt_eval_count and r.prompt_eval_count > 0, f"prompt_eval_count {r.prompt_eval_count}")

    def ollama_embed(self):
        r = self.ollama.embed(model=self.model, input=["first text", "second text"])
        expect(len(r.embeddings) == 2, f"{len(r.embeddings)} embeddings for 2 inputs")
        expect(all(len(e) > 0 for e in r.embeddings), "an empty vector")
        one = self.ollama.embed(model=self.model, input="just one")
        expect(len(one.embeddings) == 1, f"{len(one.embeddings)} embeddings for 1 input")

    # ---- openai ----

    def openai_models_list(self):
        ids = [m.id for m in self.openai.models.list()]
        expect(set(self.models) <= set(ids), f"demo models missing from {ids}")
        expect(len(ids) == len(set(ids)), f"a model listed twice: {ids}")

    def openai_models_retrieve(self):
        m = self.openai.models.retrieve(self.model)
        expect(m.id == self.model and m.object == "model", f"{m}")

    def openai_chat(self):
        r = self.openai.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": "hi"}]
        )
        choice = r.choices[0]
        expect(choice.message.content and choice.message.content.strip(), "empty answer")
        expect(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason}")
        expect(r.usage and r.usage.completion_tokens > 0, f"usage {r.usage}")

    def openai_chat_stream(self):
        chunks = list(
            self.openai.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        with_text = [c for c in chunks if c.choices and c.choices[0].delta.content]
        expect(len(with_text) >= 3, f"{len(with_text)} chunks with text")
        expect(text.strip(), "no text streamed")
        expect(
            any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks),
            "no chunk finished the stream",
        )

    def openai_responses(self):
        r = self.openai.responses.create(model=self.model, input="why is the sky blue")
        expect(r.status == "completed", f"status {r.status}")
        expect(r.output_text.strip(), "empty output_text")
        expect(r.usage and r.usage.output_tokens > 0, f"usage {r.usage}")

    def openai_responses_stream(self):
        events = list(
            self.openai.responses.create(model=self.model, input="why is the sky blue", stream=True)
        )
        types = [e.type for e in events]
        expect(types[0] == "response.created", f"first event {types[0]}")
        expect(types[-1] == "response.completed", f"last event {types[-1]}")
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        expect(len(deltas) >= 3, f"{len(deltas)} text deltas")
        numbers = [e.sequence_number for e in events]
        expect(numbers == sorted(numbers), f"sequence numbers out of order: {numbers}")
        final = events[-1].response
        expect(final.output_text == "".join(deltas), "deltas differ from the final text")

    def openai_embeddings(self):
        r = self.openai.embeddings.create(model=self.model, input=["first text", "second text"])
        expect(len(r.data) == 2, f"{len(r.data)} embeddings for 2 inputs")
        expect([d.index for d in r.data] == [0, 1], f"indexes {[d.index for d in r.data]}")
        expect(all(len(d.embedding) > 0 for d in r.data), "an empty vector")


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Switchyard's base URL")
    parser.add_argument("--chat-model", required=True, help="a model every backend serves")
    parser.add_argument("--models", required=True, help="every model the fleet serves, comma-separated")
    args = parser.parse_args()

    checks = Checks(args.url.rstrip("/"), args.chat_model, args.models.split(","))
    names = [n for n in vars(Checks) if n.startswith(("ollama_", "openai_"))]
    failed = []
    for name in names:
        try:
            getattr(checks, name)()
            print(f"ok    {name}")
        except CheckFailed as e:
            failed.append(name)
            print(f"FAIL  {name}: {e}")
        except Exception:
            failed.append(name)
            print(f"FAIL  {name}: raised")
            traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
    print(f"client checks: {len(names) - len(failed)} of {len(names)} ok")
    if failed:
        print("failed:", " ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
