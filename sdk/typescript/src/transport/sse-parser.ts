/** One server-sent event. */
export interface SseEvent {
  /** The `event:` field; "message" when absent. */
  event: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** The `id:` field, if any. */
  id?: string;
}

/**
 * An incremental `text/event-stream` parser (the WHATWG HTML "event stream interpretation"):
 * feed it decoded text as it arrives, in chunks of any size; it calls `onEvent` for each
 * complete event. Lines end with CRLF, LF or CR; lines starting with `:` are comments
 * (keep-alives); an event with no `data:` field is not dispatched.
 */
export class SseParser {
  private buffer = "";
  /** Whether the last chunk ended with CR, so a LF starting the next one belongs to it. */
  private pendingCr = false;
  private eventType = "";
  private dataLines: string[] = [];
  private hasData = false;
  private lastId: string | undefined;

  /** Creates a parser calling `onEvent` for each complete event. */
  constructor(private readonly onEvent: (event: SseEvent) => void) {}

  /** Feeds a chunk of decoded text. */
  push(chunk: string): void {
    let text = chunk;
    if (this.pendingCr && text.startsWith("\n")) text = text.slice(1);
    this.pendingCr = false;
    this.buffer += text;
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      let end: number;
      if (cr < 0 && lf < 0) break;
      if (cr < 0) end = lf;
      else if (lf < 0) end = cr;
      else end = Math.min(cr, lf);
      const line = this.buffer.slice(start, end);
      if (this.buffer[end] === "\r") {
        if (end + 1 < this.buffer.length) {
          start = this.buffer[end + 1] === "\n" ? end + 2 : end + 1;
        } else {
          start = end + 1;
          this.pendingCr = true;
        }
      } else {
        start = end + 1;
      }
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
  }

  /** The stream ended: an incomplete event at its end is discarded, as the spec says. */
  end(): void {
    this.buffer = "";
    this.reset();
  }

  private line(line: string): void {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    let field: string;
    let value: string;
    if (colon < 0) {
      field = line;
      value = "";
    } else {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
    }
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.dataLines.push(value);
        this.hasData = true;
        break;
      case "id":
        if (!value.includes("\0")) this.lastId = value;
        break;
      default:
        // `retry` and unknown fields: nothing to do for this client.
        break;
    }
  }

  private dispatch(): void {
    if (this.hasData) {
      const event: SseEvent = {
        event: this.eventType || "message",
        data: this.dataLines.join("\n"),
      };
      if (this.lastId !== undefined) event.id = this.lastId;
      this.reset();
      this.onEvent(event);
    } else {
      this.reset();
    }
  }

  private reset(): void {
    this.eventType = "";
    this.dataLines = [];
    this.hasData = false;
  }
}
