"""The request bodies, as pydantic models: FastAPI validates them and lists them at /docs.

Types and int64 ranges are checked here (strictly: "5" is not a number); the values that depend on
the model or the server (max_tokens, top_k, logprobs, the prompt's characters) are checked by the
engine and the server's limits, after. OpenAI's other fields (suffix, best_of, penalties,
logit_bias, user, ...) are accepted and ignored.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

INT64_MAX = 2**63 - 1

Int64 = Annotated[StrictInt, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
Count = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]
Number = StrictFloat | StrictInt
Stop = StrictStr | list[StrictStr] | None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class Sampling(BaseModel):
    """What completions and chat share."""
    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    max_tokens: Int64 | None = Field(None, description="characters to generate (default 16)")
    temperature: Number | None = Field(None, description="0 picks the likeliest character (default 1)")
    top_p: Number | None = None
    top_k: Int64 | None = Field(None, description="sample among the k likeliest characters (not OpenAI's)")
    seed: Int64 | None = Field(None, description="choice i uses seed + i")
    stop: Stop = Field(None, description="ends a text before it (at most --max-stop strings)")
    n: Count = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    skip_unknown: StrictBool = Field(False, description="drop prompt characters outside the vocabulary")


class CompletionRequest(Sampling):
    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1)]
    echo: StrictBool = False
    logprobs: Int64 | None = Field(None, description="k: per character its logprob and the k likeliest")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: StrictStr
    content: StrictStr | list[TextPart] | None = None

    def text(self):
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Int64 | None = Field(None, description="the same as max_tokens, which it replaces")
    logprobs: StrictBool = False
    top_logprobs: Int64 | None = None
