package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// costShare is the instructions per transaction one part of a pooler spent.
type costShare struct {
	part  string
	perTx float64
}

// callgrindSelf sums a callgrind output file's self cost (Ir) by part: the
// Go package for pgferry's own binary, the shared object otherwise (libc,
// libevent, the pgbouncer binary itself). Costs on "calls=" lines are the
// callee's inclusive cost and are skipped; only self cost adds up to the
// file's total.
func callgrindSelf(path string, part func(object, fn string) string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("callgrind output: %w", err)
	}
	defer f.Close()
	objects, fns := map[string]string{}, map[string]string{}
	var ob, fn string
	skipNext := false
	out := map[string]int64{}
	// A cost line is the position columns ("positions:", default "line")
	// then the events' counts ("events:"), of which Ir is the one summed.
	npos, ir := 1, 0
	// "totals:" is the sum of the cost lines by definition, and the figure
	// callgrindTotal reads; "summary:" can differ from it slightly in a dump
	// taken after callgrind_control --zero (seen: 3,515,193 against 3,520,457).
	var sum, total int64 = 0, -1
	// name resolves callgrind's name compression: "(id) name" defines id,
	// "(id)" refers back to it.
	name := func(table map[string]string, v string) string {
		if !strings.HasPrefix(v, "(") {
			return v
		}
		id, rest, _ := strings.Cut(v, ")")
		id += ")"
		if rest = strings.TrimSpace(rest); rest != "" {
			table[id] = rest
			return rest
		}
		return table[id]
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "positions:"):
			npos = len(strings.Fields(line[len("positions:"):]))
			continue
		case strings.HasPrefix(line, "events:"):
			ir = slices.Index(strings.Fields(line[len("events:"):]), "Ir")
			if ir < 0 {
				return nil, fmt.Errorf("%s: no Ir event", path)
			}
			continue
		case strings.HasPrefix(line, "totals:"):
			if f := strings.Fields(line[len("totals:"):]); len(f) > ir {
				total, _ = strconv.ParseInt(f[ir], 10, 64)
			}
			continue
		case strings.HasPrefix(line, "ob="):
			ob = name(objects, line[3:])
			continue
		case strings.HasPrefix(line, "cob="):
			name(objects, line[4:])
			continue
		case strings.HasPrefix(line, "fn="):
			fn = name(fns, line[3:])
			continue
		case strings.HasPrefix(line, "cfn="):
			name(fns, line[4:])
			continue
		case strings.HasPrefix(line, "calls="):
			skipNext = true
			continue
		}
		c := line[0]
		if !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '*') {
			continue
		}
		if skipNext {
			skipNext = false
			continue
		}
		fields := strings.Fields(line)
		if len(fields) <= npos+ir {
			continue // no Ir count on this line: zero
		}
		v, err := strconv.ParseInt(fields[npos+ir], 10, 64)
		if err != nil {
			continue
		}
		out[part(ob, fn)] += v
		sum += v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if total >= 0 && sum != total {
		return nil, fmt.Errorf("%s: self costs add up to %d, the totals line says %d", path, sum, total)
	}
	return out, nil
}

// goPart names the part of a Go program a function belongs to.
func goPart(_, fn string) string {
	switch {
	case strings.HasPrefix(fn, "github.com/pgferry/pgferry/"):
		pkg := strings.TrimPrefix(fn, "github.com/pgferry/pgferry/")
		pkg, _, _ = strings.Cut(pkg, ".")
		return "pgferry " + pkg
	case strings.HasPrefix(fn, "internal/poll."), strings.HasPrefix(fn, "net."),
		strings.HasPrefix(fn, "syscall."), strings.HasPrefix(fn, "internal/runtime/syscall"):
		return "Go poll, net, syscall"
	case strings.HasPrefix(fn, "runtime."), strings.HasPrefix(fn, "internal/runtime/"),
		strings.HasPrefix(fn, "gogo"), strings.HasPrefix(fn, "gosave"), strings.HasPrefix(fn, "runtime/"):
		return "Go runtime"
	case strings.HasPrefix(fn, "time."):
		return "Go time"
	case strings.HasSuffix(fn, "body"), strings.HasPrefix(fn, "internal/bytealg"), strings.HasPrefix(fn, "bytes."):
		return "Go bytes"
	case strings.HasPrefix(fn, "crypto/"), strings.HasPrefix(fn, "hash/"):
		return "Go crypto, hash"
	case strings.HasPrefix(fn, "strings."), strings.HasPrefix(fn, "strconv."), strings.HasPrefix(fn, "unicode/"),
		strings.HasPrefix(fn, "encoding/"):
		return "Go strings, strconv, encoding"
	}
	return "other"
}

// objectPart names a C program's part by its shared object.
func objectPart(object, _ string) string {
	if object == "" {
		return "other"
	}
	return filepath.Base(object)
}

// instrBreakdown is the per-transaction difference between the long and
// the short run's parts, largest first.
func instrBreakdown(shortPath, longPath string, tx int64, goProgram bool) ([]costShare, error) {
	part := objectPart
	if goProgram {
		part = goPart
	}
	a, err := callgrindSelf(shortPath, part)
	if err != nil {
		return nil, err
	}
	b, err := callgrindSelf(longPath, part)
	if err != nil {
		return nil, err
	}
	var out []costShare
	for k, v := range b {
		if d := float64(v-a[k]) / float64(tx); d >= 1 {
			out = append(out, costShare{part: k, perTx: d})
		}
	}
	slices.SortFunc(out, func(x, y costShare) int {
		if x.perTx != y.perTx {
			if x.perTx > y.perTx {
				return -1
			}
			return 1
		}
		return strings.Compare(x.part, y.part)
	})
	return out, nil
}
