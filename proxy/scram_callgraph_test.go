package proxy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestVerifierModeNeverSeesAPassword proves, on the source, that no code
// path of the verifier mode can receive a cleartext password: nothing
// reachable from (*Session).scramWithVerifier asks the client for one,
// relays one, or derives keys from one.
//
// The call graph is over-approximated, so an edge too many can only make
// the test fail, never pass wrongly. The package is type-checked (its
// imports as empty packages), so a call on a value of the package's own
// type reaches that method; a call through an interface, or on a value
// whose type is unknown, reaches every method of that name; a function or
// method used as a value (a callback) counts as called by every function
// that calls through a variable, a field or another package's method;
// closures count as part of the function around them.
func TestVerifierModeNeverSeesAPassword(t *testing.T) {
	g := parsePackageCallGraph(t, ".")
	forbidden := []string{
		"Session.readCleartextPassword", // asks the client for its password
		"Session.relayPassword",         // relays a PasswordMessage
		"Session.scramWithPassword",     // the auto mode
		"passwordKeys",                  // PBKDF2 over a password
		"normalizeSCRAMPassword",        // SASLprep of a password
		"scramKeyCache.get",             // the auto mode's cache, keyed by passwords
		"scramKeyCache.put",
		"const authCleartextPassword", // AuthenticationCleartextPassword
		"ext pbkdf2.Key",
		"ext precis.OpaqueString",
	}
	for _, f := range forbidden {
		if !g.exists(f) {
			t.Fatalf("%s is not in the package any more: update this test", f)
		}
	}
	reach := g.reachable("Session.scramWithVerifier")
	if len(reach) < 10 {
		t.Fatalf("only %d functions reachable: the graph is broken", len(reach))
	}
	for _, f := range forbidden {
		if path, ok := reach[f]; ok {
			t.Errorf("the verifier mode reaches %s: %s", f, strings.Join(path, " → "))
		}
	}
	// The check has teeth: the auto mode does reach them.
	auto := g.reachable("Session.scramWithPassword")
	for _, f := range []string{"Session.readCleartextPassword", "passwordKeys", "ext pbkdf2.Key", "const authCleartextPassword"} {
		if _, ok := auto[f]; !ok {
			t.Errorf("the auto mode does not reach %s: the call graph misses edges", f)
		}
	}
}

// callGraph is the package's functions and what each one refers to.
type callGraph struct {
	edges map[string][]string // function → referenced functions, methods, constants, external names
	// indirect: functions that call through a variable or field.
	indirect map[string]bool
	// valueUsed: functions and methods used as values (not called).
	valueUsed []string
}

func (g *callGraph) exists(name string) bool {
	if _, ok := g.edges[name]; ok {
		return true
	}
	for _, es := range g.edges {
		if slices.Contains(es, name) {
			return true
		}
	}
	return false
}

// reachable returns everything reachable from root, each with a path.
func (g *callGraph) reachable(root string) map[string][]string {
	seen := map[string][]string{root: {root}}
	queue := []string{root}
	for len(queue) > 0 {
		f := queue[0]
		queue = queue[1:]
		next := g.edges[f]
		if g.indirect[f] {
			next = append(slices.Clone(next), g.valueUsed...)
		}
		for _, n := range next {
			if _, ok := seen[n]; ok {
				continue
			}
			seen[n] = append(slices.Clone(seen[f]), n)
			queue = append(queue, n)
		}
	}
	return seen
}

func parsePackageCallGraph(t *testing.T, dir string) *callGraph {
	t.Helper()
	fset := token.NewFileSet()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// Type-check the package alone: imports are empty packages (type-
	// checking pgx and Prometheus from source takes 20 s), so their
	// types are invalid and their errors ignored; what matters, the
	// package's own types and methods, resolves.
	info := &types.Info{
		Uses:       map[*ast.Ident]types.Object{},
		Defs:       map[*ast.Ident]types.Object{},
		Selections: map[*ast.SelectorExpr]*types.Selection{},
	}
	conf := types.Config{
		Importer: importerFunc(func(path string) (*types.Package, error) {
			pkg := types.NewPackage(path, path[strings.LastIndex(path, "/")+1:])
			pkg.MarkComplete()
			return pkg, nil
		}),
		Error: func(error) {},
	}
	pkg, _ := conf.Check("proxy", fset, files, info)

	// Methods of the package by name, for calls whose receiver is an
	// interface or of unknown type.
	methods := map[string][]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil {
				methods[fd.Name.Name] = append(methods[fd.Name.Name], recvName(fd)+"."+fd.Name.Name)
			}
		}
	}
	funcKey := func(fn *types.Func) string {
		sig := fn.Type().(*types.Signature)
		if sig.Recv() == nil {
			return fn.Name()
		}
		rt := sig.Recv().Type()
		if p, ok := rt.(*types.Pointer); ok {
			rt = p.Elem()
		}
		if n, ok := rt.(*types.Named); ok {
			return n.Obj().Name() + "." + fn.Name()
		}
		return "?." + fn.Name()
	}

	g := &callGraph{edges: map[string][]string{}, indirect: map[string]bool{}}
	valueUsed := map[string]bool{}
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			name := fd.Name.Name
			if fd.Recv != nil {
				name = recvName(fd) + "." + name
			}
			var refs []string
			called := map[ast.Expr]bool{}
			resolved := map[ast.Expr]bool{}
			selectors := map[*ast.Ident]bool{} // the Sel of a SelectorExpr: handled there
			ref := func(e ast.Expr, key string) {
				refs = append(refs, key)
				resolved[e] = true
				if !called[e] {
					valueUsed[key] = true
				}
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					called[ast.Unparen(n.Fun)] = true
				case *ast.Ident:
					if selectors[n] {
						return true
					}
					switch obj := info.Uses[n].(type) {
					case *types.Func:
						if obj.Pkg() == pkg {
							ref(n, funcKey(obj))
						}
					case *types.Const:
						if obj.Pkg() == pkg {
							refs = append(refs, "const "+obj.Name())
						}
					case *types.PkgName, *types.TypeName, *types.Builtin, *types.Nil:
						resolved[n] = true
					}
				case *ast.SelectorExpr:
					selectors[n.Sel] = true
					if x, ok := n.X.(*ast.Ident); ok {
						if _, isPkg := info.Uses[x].(*types.PkgName); isPkg {
							refs = append(refs, "ext "+x.Name+"."+n.Sel.Name)
							resolved[n] = true
							return false
						}
					}
					sel := info.Selections[n]
					switch {
					case sel == nil || sel.Kind() == types.FieldVal:
						// A field (a func-valued one is called indirectly), or
						// an expression of another package's type.
						if sel == nil {
							for _, m := range methods[n.Sel.Name] {
								ref(n, m)
							}
						}
					case types.IsInterface(sel.Recv()):
						for _, m := range methods[n.Sel.Name] {
							ref(n, m)
						}
					default:
						if fn, ok := sel.Obj().(*types.Func); ok && fn.Pkg() == pkg {
							ref(n, funcKey(fn))
						} else {
							resolved[n] = true // another package's method
						}
					}
				}
				return true
			})
			// Calls through anything not resolved to a function: a func
			// variable, a func-valued field, a closure.
			for fun := range called {
				if !resolved[fun] {
					if _, isLit := fun.(*ast.FuncLit); !isLit {
						g.indirect[name] = true
					}
				}
			}
			g.edges[name] = append(g.edges[name], refs...)
		}
	}
	for v := range valueUsed {
		g.valueUsed = append(g.valueUsed, v)
	}
	sort.Strings(g.valueUsed)
	return g
}

type importerFunc func(path string) (*types.Package, error)

func (f importerFunc) Import(path string) (*types.Package, error) { return f(path) }

func recvName(fd *ast.FuncDecl) string {
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok {
		t = ix.X
	}
	return t.(*ast.Ident).Name
}
