package publish

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"berth/internal/config"
	"berth/internal/image"
	"berth/internal/lock"
	"berth/internal/progress"
)

// Credentials are the S3 access key pair and where they came from (for messages; the values are never
// printed).
type Credentials struct {
	AccessKey, SecretKey string
	Origin               string
}

// LoadCredentials takes AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment, else from the
// file [Publish] Credentials (KEY=value lines), which must not be readable by others.
func LoadCredentials(c *config.Config, lookupEnv func(string) (string, bool)) (Credentials, error) {
	id, okID := lookupEnv("AWS_ACCESS_KEY_ID")
	secret, okSecret := lookupEnv("AWS_SECRET_ACCESS_KEY")
	if okID && okSecret && id != "" && secret != "" {
		return Credentials{id, secret, "env AWS_ACCESS_KEY_ID"}, nil
	}
	f := c.Publish.Credentials
	st, err := os.Stat(f)
	if err != nil {
		return Credentials{}, fmt.Errorf("publish: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write them to %s ([Publish] Credentials, mode 0600)", f)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return Credentials{}, fmt.Errorf("publish: credentials file %s is readable by others (mode %v): chmod 600 it", f, st.Mode().Perm())
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return Credentials{}, fmt.Errorf("publish: %w", err)
	}
	cr := Credentials{Origin: "file " + f}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch strings.TrimSpace(strings.TrimPrefix(k, "export ")) {
		case "AWS_ACCESS_KEY_ID":
			cr.AccessKey = v
		case "AWS_SECRET_ACCESS_KEY":
			cr.SecretKey = v
		}
	}
	if cr.AccessKey == "" || cr.SecretKey == "" {
		return Credentials{}, fmt.Errorf("publish: credentials file %s lacks AWS_ACCESS_KEY_ID= or AWS_SECRET_ACCESS_KEY=", f)
	}
	return cr, nil
}

// Store is the bucket images are published to.
type Store struct {
	client *minio.Client
	c      *config.Config
	cred   Credentials
}

// Open connects to [Publish] Endpoint and checks that the credentials are accepted and the bucket exists:
// each failure is one line naming what is wrong, before anything is exported or uploaded.
func Open(ctx context.Context, c *config.Config, cred Credentials) (*Store, error) {
	if c.Publish.Endpoint == "" || c.Publish.Bucket == "" {
		return nil, errors.New("publish: [Publish] Endpoint and Bucket are not set: name the S3 endpoint and bucket in berth.conf")
	}
	u, _ := url.Parse(c.Publish.Endpoint)
	cl, err := minio.New(u.Host, &minio.Options{Creds: credentials.NewStaticV4(cred.AccessKey, cred.SecretKey, ""),
		Secure: u.Scheme == "https", Region: c.Publish.Region, BucketLookup: minio.BucketLookupPath, MaxRetries: 2})
	if err != nil {
		return nil, fmt.Errorf("publish: [Publish] Endpoint %s: %w", c.Publish.Endpoint, err)
	}
	s := &Store{client: cl, c: c, cred: cred}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ok, err := cl.BucketExists(cctx, c.Publish.Bucket)
	if err != nil {
		return nil, s.explain(err)
	}
	if !ok {
		return nil, fmt.Errorf("publish: bucket %q does not exist at %s: create it, or fix [Publish] Bucket", c.Publish.Bucket, c.Publish.Endpoint)
	}
	return s, nil
}

// explain turns an S3 or network error into one line naming the endpoint, and the credentials' origin when
// they were refused.
func (s *Store) explain(err error) error {
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("publish: [Publish] Endpoint %s does not answer: %s", s.c.Publish.Endpoint, oneLine(err))
	}
	r := minio.ToErrorResponse(err)
	switch r.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidClientTokenId", "Forbidden":
		return fmt.Errorf("publish: %s refused the credentials from %s (%s): check the access key and secret", s.c.Publish.Endpoint, s.cred.Origin, r.Code)
	case "NoSuchBucket":
		return fmt.Errorf("publish: bucket %q does not exist at %s: create it, or fix [Publish] Bucket", s.c.Publish.Bucket, s.c.Publish.Endpoint)
	}
	if r.StatusCode == 403 {
		return fmt.Errorf("publish: %s refused the credentials from %s (HTTP 403): check the access key and secret", s.c.Publish.Endpoint, s.cred.Origin)
	}
	return fmt.Errorf("publish: %s: %s", s.c.Publish.Endpoint, oneLine(err))
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

func (s *Store) object(rel string) string { return Join(s.c.Publish.Prefix, rel) }

// ReadIndex reads index.json from the bucket; a bucket without one has an empty index.
func (s *Store) ReadIndex(ctx context.Context) (Index, error) {
	o, err := s.client.GetObject(ctx, s.c.Publish.Bucket, s.object(IndexName), minio.GetObjectOptions{})
	if err == nil {
		var b []byte
		if b, err = io.ReadAll(o); err == nil {
			o.Close()
			return ParseIndex(b)
		}
		o.Close()
	}
	if minio.ToErrorResponse(err).Code == "NoSuchKey" {
		return Index{Images: map[string]Entry{}}, nil
	}
	return Index{}, s.explain(err)
}

func (s *Store) writeIndex(ctx context.Context, idx Index) error {
	b, err := jsonIndent(idx)
	if err != nil {
		return err
	}
	_, err = s.client.PutObject(ctx, s.c.Publish.Bucket, s.object(IndexName), bytes.NewReader(b), int64(len(b)),
		minio.PutObjectOptions{ContentType: "application/json", CacheControl: "no-cache"})
	if err != nil {
		return s.explain(err)
	}
	return nil
}

// has tells whether every object of e's build is in the bucket with the size the index names.
func (s *Store) has(ctx context.Context, name string, e Entry) bool {
	for rel, size := range map[string]int64{e.Tarball: e.Size, Dir(name, e.Build) + "/SHA256SUMS": -1, Dir(name, e.Build) + "/SHA256SUMS.gpg": -1} {
		st, err := s.client.StatObject(ctx, s.c.Publish.Bucket, s.object(rel), minio.StatObjectOptions{})
		if err != nil || (size >= 0 && st.Size != size) {
			return false
		}
	}
	return true
}

// Result is what publishing one image did, for the report.
type Result struct {
	Image, Build   string
	Size           int64
	Export, Upload time.Duration
	Uploaded       bool
}

// Installed lists the machine images installed on this host (a tree with a stamp), in fsys's order.
func Installed(c *config.Config, fsys fs.FS) ([]string, error) {
	names, err := image.NamesOfKind(fsys, "machine")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if _, err := image.ReadStamp(image.MachineDir(c, n)); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Publish exports each named machine, signs its SHA256SUMS and uploads the three objects; index.json names
// the new build only once they are all there. A build already current in the index uploads nothing.
func Publish(ctx context.Context, c *config.Config, fsys fs.FS, names []string, cred Credentials, out io.Writer) ([]Result, error) {
	for _, n := range names {
		if _, err := image.ReadStamp(image.MachineDir(c, n)); err != nil {
			return nil, fmt.Errorf("publish: %s is not installed here (%s): install it first", n, image.MachineDir(c, n))
		}
	}
	if len(names) == 0 {
		return nil, errors.New("publish: no machine is installed here: install one first")
	}
	s, err := Open(ctx, c, cred)
	if err != nil {
		return nil, err
	}
	key, made, err := EnsureKey(c.Publish.Key)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	if made {
		fmt.Fprintf(out, "made the signing key %s (%s); give pulling hosts its public key: berth publish:key > publisher.asc\n", c.Publish.Key, Fingerprint(key))
	}
	l, err := lock.Acquire(ctx, filepath.Join(c.Paths.State, "locks", "publish.lock"), "publish", time.Hour)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	idx, err := s.ReadIndex(ctx)
	if err != nil {
		return nil, err
	}
	var results []Result
	for _, n := range names {
		r, e, err := s.publishOne(ctx, c, fsys, n, idx, key)
		if err != nil {
			return results, fmt.Errorf("publish %s: %w", n, err)
		}
		results = append(results, r)
		if !r.Uploaded {
			fmt.Fprintf(out, "%s: build %s is already published at %s; nothing uploaded\n", n, r.Build, s.where(e.Tarball))
			continue
		}
		idx.Images[n] = e
		if err := s.writeIndex(ctx, idx); err != nil {
			return results, err
		}
		fmt.Fprintf(out, "%s: published build %s: %.1f MiB (export %s, upload %s) at %s\n", n, r.Build, float64(r.Size)/(1<<20),
			r.Export.Round(100*time.Millisecond), r.Upload.Round(100*time.Millisecond), s.where(e.Tarball))
	}
	return results, nil
}

func (s *Store) where(rel string) string {
	return Join(Join(s.c.Publish.Endpoint, s.c.Publish.Bucket), s.object(rel))
}

func (s *Store) publishOne(ctx context.Context, c *config.Config, fsys fs.FS, name string, idx Index, key *openpgp.Entity) (Result, Entry, error) {
	// The machine's lock: no install swaps the tree while it is read.
	l, err := lock.Acquire(ctx, filepath.Join(c.Paths.State, "locks", "machine-"+name+".lock"), name+" publish", time.Hour)
	if err != nil {
		return Result{}, Entry{}, err
	}
	defer l.Release()
	dir := image.MachineDir(c, name)
	st, err := image.ReadStamp(dir)
	if err != nil {
		return Result{}, Entry{}, err
	}
	build := BuildKey(st)
	r := Result{Image: name, Build: build}
	if e, ok := idx.Images[name]; ok && e.Build == build && e.Signer == Fingerprint(key) && s.has(ctx, name, e) {
		r.Size = e.Size
		return r, e, nil
	}
	m, err := image.Load(fsys, name)
	if err != nil {
		return r, Entry{}, err
	}
	strip := Strip{Empty: []string{"srv"}}
	for _, b := range m.Binds {
		strip.Empty = append(strip.Empty, strings.Trim(b.Guest, "/"))
	}
	tmpDir := filepath.Join(c.Paths.Cache, "publish")
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return r, Entry{}, err
	}
	job := progress.New(name+":publish", 3)
	step := job.Step("export " + dir + " (secrets stripped) as " + TarballName(name))
	start := time.Now()
	f, err := os.CreateTemp(tmpDir, name+"-*.tar.gz")
	if err != nil {
		return r, Entry{}, step.Done(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	sum, err := Export(dir, bw, strip, st.Built)
	if err == nil {
		err = bw.Flush()
	}
	if err := step.Done(err); err != nil {
		return r, Entry{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return r, Entry{}, err
	}
	r.Size, r.Export = fi.Size(), time.Since(start)
	sums := Sums(sum, TarballName(name))
	sig, err := Sign(key, sums)
	if err != nil {
		return r, Entry{}, err
	}
	rel := Dir(name, build)
	step = job.Step(fmt.Sprintf("upload %.1f MiB to %s", float64(r.Size)/(1<<20), s.where(rel)))
	start = time.Now()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return r, Entry{}, step.Done(err)
	}
	pr := &uploadProgress{w: step, total: r.Size}
	_, err = s.client.PutObject(ctx, s.c.Publish.Bucket, s.object(rel+"/"+TarballName(name)), f, r.Size,
		minio.PutObjectOptions{ContentType: "application/gzip", Progress: pr, PartSize: 64 << 20})
	for _, o := range []struct {
		name string
		b    []byte
	}{{"SHA256SUMS", sums}, {"SHA256SUMS.gpg", sig}} {
		if err != nil {
			break
		}
		_, err = s.client.PutObject(ctx, s.c.Publish.Bucket, s.object(rel+"/"+o.name), bytes.NewReader(o.b), int64(len(o.b)),
			minio.PutObjectOptions{ContentType: "text/plain"})
	}
	if err != nil {
		err = s.explain(err)
	}
	if err := step.Done(err); err != nil {
		return r, Entry{}, err
	}
	r.Upload, r.Uploaded = time.Since(start), true
	e := Entry{Build: build, Tarball: rel + "/" + TarballName(name), SHA256: sum, Size: r.Size, Signer: Fingerprint(key), Published: time.Now().UTC().Truncate(time.Second)}
	step = job.Step("check every object, then make build " + build + " current in " + IndexName)
	if !s.has(ctx, name, e) {
		return r, Entry{}, step.Done(fmt.Errorf("the uploaded objects of %s are not all in the bucket: %s not made current", build, IndexName))
	}
	step.Done(nil)
	logger().Info("image published", "image", name, "build", build, "bytes", r.Size, "object", s.where(e.Tarball))
	return r, e, nil
}

// uploadProgress counts the bytes minio-go reads for the upload and reports each tenth.
type uploadProgress struct {
	w     io.Writer
	total int64
	done  atomic.Int64
	last  atomic.Int64
}

func (p *uploadProgress) Read(b []byte) (int, error) {
	n := p.done.Add(int64(len(b)))
	if p.total > 0 {
		if tenth := n * 10 / p.total; tenth > p.last.Load() {
			p.last.Store(tenth)
			fmt.Fprintf(p.w, "uploaded %.1f of %.1f MiB\n", float64(n)/(1<<20), float64(p.total)/(1<<20))
		}
	}
	return len(b), nil
}

func jsonIndent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}

// ExportPublicKey writes the signing key's public part (making the key when missing).
func ExportPublicKey(c *config.Config, out io.Writer) error {
	key, made, err := EnsureKey(c.Publish.Key)
	if err != nil {
		return err
	}
	if made {
		fmt.Fprintf(os.Stderr, "made the signing key %s (%s)\n", c.Publish.Key, Fingerprint(key))
	}
	b, err := PublicKey(key)
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	return err
}
