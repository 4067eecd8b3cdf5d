"""The API's error: OpenAI's shape {"error": {"message", "type", "param", "code"}}."""

from fastapi.responses import JSONResponse

RETRY_AFTER = "1"            # s, on a 503


class APIError(Exception):
    def __init__(self, status, message, type_="invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def error_response(status, message, type_="invalid_request_error", code=None, param=None):
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)
