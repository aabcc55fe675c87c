package hbone

// pipeBody reads a pipe as an io.Reader (for the pipe tests).
type pipeBody struct{ p *pipe }

func (b pipeBody) Read(x []byte) (int, error) { return b.p.read(x, nil) }
