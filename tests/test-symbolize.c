/* Tests of the symbolizer (analyzer/symbolize.c).
 *
 * Two halves. The "self" tests symbolize addresses inside this test binary
 * itself, described the way the recorder describes a module (load bias,
 * PT_LOAD ranges and build-id from dl_iterate_phdr, path from
 * /proc/self/exe): return addresses taken with __builtin_return_address at
 * call sites whose lines are recorded with __LINE__, one of them inside an
 * always_inline function; also against stripped copies of the binary, and
 * against 200 copies at different addresses (more than stay open at
 * once). They need no preloading, so they also run under the sanitizers. The "program" tests run tests/programs/symbols.c under
 * libmemtrace.so (skipped in sanitizer builds, where the library cannot be
 * preloaded into an uninstrumented program), read its trace with the
 * reader, and symbolize the allocation stacks from the trace's MODULE and
 * STACK records, against the program itself and against copies stripped
 * in different ways (strip and objcopy run at test time; skipped when
 * missing). Paths come from tests/meson.build: MEMTRACE_TEST_LIB,
 * MEMTRACE_TEST_SYMBOLS.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reader.h"
#include "symbolize.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

#define SYM_DIRECT_SIZE 1234567 /* as in programs/symbols.c */
#define SYM_INLINE_SIZE 2345671

static char tmpdir[PATH_MAX];

static void make_tmpdir(void)
{
    char tmpl[] = "/tmp/memtrace-sym-XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    cr_assert_not_null(realpath(tmpl, tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[PATH_MAX + 32];
    if (!tmpdir[0])
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

TestSuite(symbolize, .init = make_tmpdir, .fini = remove_tmpdir, .timeout = 120);

static const char *env(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && *v, "%s is not set (run through meson test)", name);
    return v;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = s ? strlen(s) : 0, b = strlen(suffix);
    return s && a >= b && !strcmp(s + a - b, suffix);
}

static struct mt_symbolizer *new_symbolizer(void)
{
    struct mt_symbolizer *s = NULL;
    struct mt_error err = { "" };
    cr_assert_eq(mt_symbolizer_new(&s, &err), 0, "%s", err.msg);
    return s;
}

/* A module as a MODULE LOAD record describes it. */
struct mod_rec {
    char path[PATH_MAX];
    uint64_t bias;
    uint64_t segs[MT_MAX_SEGMENTS][2];
    uint32_t nsegs;
    uint8_t build_id[MT_MAX_BUILD_ID];
    uint32_t build_id_len;
};

static void add(struct mt_symbolizer *s, const struct mod_rec *m, const char *path)
{
    if (!path)
        path = m->path;
    cr_assert_eq(mt_symbolizer_add_module(s, path, strlen(path), m->bias, (const uint64_t(*)[2])m->segs,
                                          m->nsegs, m->build_id, m->build_id_len),
                 0);
}

static void expect_frame(const struct mt_frame_info *f, const char *function, const char *file_suffix,
                         unsigned line, bool inlined)
{
    cr_expect_eq(f->status, MT_FRAME_OK, "status %d", f->status);
    cr_expect(f->function && !strcmp(f->function, function), "function %s, expected %s",
              f->function ? f->function : "(null)", function);
    if (file_suffix) {
        cr_expect(ends_with(f->file, file_suffix), "file %s, expected .../%s", f->file ? f->file : "(null)",
                  file_suffix);
    } else {
        cr_expect_null(f->file, "file %s, expected none", f->file);
    }
    cr_expect_eq(f->line, line, "line %u, expected %u", f->line, line);
    cr_expect_eq(f->inlined, inlined, "inlined %d for %s", f->inlined, function);
    cr_expect_not_null(f->module);
}

/* ---- this binary ---------------------------------------------------------- */

static int self_direct_line, self_inline_line, self_call_line;

__attribute__((noinline)) static void *return_address(void)
{
    void *ra = __builtin_return_address(0);
    __asm__ volatile("" ::: "memory"); /* not a tail call, not folded */
    return ra;
}

__attribute__((noinline)) void *self_direct(void)
{
    void *ra = return_address(); self_direct_line = __LINE__;
    return ra;
}

static inline __attribute__((always_inline)) void *self_inline(void)
{
    void *ra = return_address(); self_inline_line = __LINE__;
    return ra;
}

__attribute__((noinline)) void *self_outer(void)
{
    void *ra = self_inline(); self_call_line = __LINE__;
    return ra;
}

struct find_self {
    uintptr_t addr;
    struct mod_rec *out;
    bool found;
};

static int find_self_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct find_self *fs = arg;
    struct mod_rec m;
    memset(&m, 0, sizeof(m));
    bool inside = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && m.nsegs < MT_MAX_SEGMENTS) {
            uint64_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
            m.segs[m.nsegs][0] = lo;
            m.segs[m.nsegs][1] = hi;
            m.nsegs++;
            inside |= fs->addr >= lo && fs->addr < hi;
        } else if (ph->p_type == PT_NOTE) {
            const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
            while (p + sizeof(ElfW(Nhdr)) <= end) {
                const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
                size_t nsz = (nh->n_namesz + 3) & ~3u, dsz = (nh->n_descsz + 3) & ~3u;
                const uint8_t *name = p + sizeof(*nh), *desc = name + nsz;
                if (desc + dsz > end)
                    break;
                if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4) &&
                    nh->n_descsz <= MT_MAX_BUILD_ID) {
                    memcpy(m.build_id, desc, nh->n_descsz);
                    m.build_id_len = nh->n_descsz;
                }
                p = desc + dsz;
            }
        }
    }
    if (!inside)
        return 0;
    m.bias = info->dlpi_addr;
    if (info->dlpi_name && *info->dlpi_name) {
        snprintf(m.path, sizeof(m.path), "%s", info->dlpi_name);
    } else {
        ssize_t n = readlink("/proc/self/exe", m.path, sizeof(m.path) - 1);
        m.path[n > 0 ? n : 0] = 0;
    }
    *fs->out = m;
    fs->found = true;
    return 1;
}

static struct mod_rec self_module(void)
{
    static struct mod_rec m;
    struct find_self fs = { (uintptr_t)&self_direct, &m, false };
    dl_iterate_phdr(find_self_cb, &fs);
    cr_assert(fs.found);
    cr_assert_gt(m.build_id_len, 0, "this binary has no build-id");
    return m;
}

Test(symbolize, self_call_site)
{
    uint64_t ra = (uintptr_t)self_direct();
    struct mod_rec m = self_module();
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, NULL);
    struct mt_frame_info f[8];
    unsigned n = mt_symbolize(s, ra, false, f, 8);
    cr_assert_eq(n, 1);
    expect_frame(&f[0], "self_direct", "test-symbolize.c", (unsigned)self_direct_line, false);
    cr_expect_str_eq(f[0].module, m.path);
    cr_expect_eq(f[0].offset, ra - m.bias);
    /* The exact address of a function's first instruction (which may
     * belong to code inlined into it). */
    n = mt_symbolize(s, (uintptr_t)&self_outer, true, f, 8);
    cr_assert_geq(n, 1);
    cr_expect_str_eq(f[n - 1].function, "self_outer");
    cr_expect(ends_with(f[n - 1].file, "test-symbolize.c"));
    cr_expect_not(f[n - 1].inlined);
    mt_symbolizer_free(s);
}

Test(symbolize, self_inlined)
{
    uint64_t ra = (uintptr_t)self_outer();
    struct mod_rec m = self_module();
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, NULL);
    struct mt_frame_info f[8];
    unsigned n = mt_symbolize(s, ra, false, f, 8);
    cr_assert_eq(n, 2, "%u frames", n);
    expect_frame(&f[0], "self_inline", "test-symbolize.c", (unsigned)self_inline_line, true);
    expect_frame(&f[1], "self_outer", "test-symbolize.c", (unsigned)self_call_line, false);
    cr_expect_eq(f[0].offset, f[1].offset);
    /* Room for one frame: the containing function. */
    n = mt_symbolize(s, ra, false, f, 1);
    cr_assert_eq(n, 1);
    expect_frame(&f[0], "self_outer", "test-symbolize.c", (unsigned)self_call_line, false);
    cr_expect_eq(mt_symbolize(s, ra, false, f, 0), 0);
    mt_symbolizer_free(s);
}

Test(symbolize, cache_and_stats)
{
    uint64_t ra1 = (uintptr_t)self_direct(), ra2 = (uintptr_t)self_outer();
    struct mod_rec m = self_module();
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, NULL);
    add(s, &m, NULL); /* the recorder may list a module again */
    struct mt_frame_info f[8], g[8];
    unsigned n1 = mt_symbolize(s, ra1, false, f, 8);
    for (int i = 0; i < 3; i++) {
        unsigned n2 = mt_symbolize(s, ra1, false, g, 8);
        cr_assert_eq(n2, n1);
        cr_expect_eq(g[0].function, f[0].function); /* the same stored string */
        cr_expect_eq(g[0].line, f[0].line);
    }
    mt_symbolize(s, ra2, false, f, 8);
    mt_symbolize(s, ra2, false, f, 8);
    mt_symbolize(s, 0x10, false, f, 8);
    mt_symbolize(s, 0x10, false, f, 8);
    uint64_t asked, unresolved[5];
    mt_symbolizer_stats(s, &asked, unresolved);
    cr_expect_eq(asked, 3);
    cr_expect_eq(unresolved[MT_FRAME_OK], 0);
    cr_expect_eq(unresolved[MT_FRAME_NO_MODULE], 1);
    cr_expect_eq(unresolved[MT_FRAME_NO_FILE], 0);
    cr_expect_eq(unresolved[MT_FRAME_MISMATCH], 0);
    mt_symbolizer_free(s);
}

Test(symbolize, no_module)
{
    struct mod_rec m = self_module();
    struct mt_symbolizer *s = new_symbolizer();
    struct mt_frame_info f[4];
    cr_assert_eq(mt_symbolize(s, (uintptr_t)&self_direct, true, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_NO_MODULE);
    cr_expect_null(f[0].module);
    cr_expect_null(f[0].function);
    add(s, &m, NULL);
    /* Right past the last segment, and far below the first. */
    uint64_t past = m.segs[m.nsegs - 1][1];
    cr_assert_eq(mt_symbolize(s, past + 1, false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_NO_MODULE);
    cr_expect_eq(f[0].offset, past + 1);
    cr_assert_eq(mt_symbolize(s, 4096, true, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_NO_MODULE);
    /* A return address just past the end is a call at the end. */
    cr_assert_eq(mt_symbolize(s, past, false, f, 4), 1);
    cr_expect_neq(f[0].status, MT_FRAME_NO_MODULE);
    mt_symbolizer_free(s);
}

Test(symbolize, missing_file_and_vdso)
{
    struct mod_rec m = self_module();
    struct mt_symbolizer *s = new_symbolizer();
    const char *missing = "/nonexistent/memtrace/libgone.so";
    add(s, &m, missing);
    struct mod_rec vdso = { .path = "linux-vdso.so.1", .bias = 0x7fff0000000, .nsegs = 1 };
    vdso.segs[0][0] = 0x7fff0000000;
    vdso.segs[0][1] = 0x7fff0002000;
    add(s, &vdso, NULL);
    struct mt_frame_info f[4];
    cr_assert_eq(mt_symbolize(s, (uintptr_t)self_direct(), false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_NO_FILE);
    cr_expect_str_eq(f[0].module, missing);
    cr_expect_null(f[0].function);
    cr_expect_null(f[0].file);
    cr_assert_eq(mt_symbolize(s, 0x7fff0000abc, false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_NO_FILE);
    cr_expect_str_eq(f[0].module, "linux-vdso.so.1");
    cr_expect_eq(f[0].offset, 0xabc);
    uint64_t asked, unresolved[5];
    mt_symbolizer_stats(s, &asked, unresolved);
    cr_expect_eq(asked, 2);
    cr_expect_eq(unresolved[MT_FRAME_NO_FILE], 2);
    mt_symbolizer_free(s);
}

Test(symbolize, build_id_mismatch)
{
    struct mod_rec m = self_module();
    m.build_id[0] ^= 0xff;
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, NULL);
    struct mt_frame_info f[4];
    cr_assert_eq(mt_symbolize(s, (uintptr_t)self_outer(), false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_MISMATCH);
    cr_expect_null(f[0].function);
    cr_expect_null(f[0].file);
    cr_expect_eq(f[0].line, 0);
    cr_assert_eq(mt_symbolize(s, (uintptr_t)self_direct(), false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_MISMATCH);
    /* A module recorded without a build-id does not match a file that has
     * one either. */
    struct mod_rec none = self_module();
    none.build_id_len = 0;
    struct mt_symbolizer *t = new_symbolizer();
    add(t, &none, NULL);
    cr_assert_eq(mt_symbolize(t, (uintptr_t)self_direct(), false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_MISMATCH);
    mt_symbolizer_free(t);
    mt_symbolizer_free(s);
}

Test(symbolize, later_module_wins)
{
    struct mod_rec m = self_module();
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, NULL);
    uint64_t ra = (uintptr_t)self_direct();
    struct mt_frame_info f[4];
    cr_assert_eq(mt_symbolize(s, ra, false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_OK);
    /* Something else loaded over a page around ra afterwards. */
    struct mod_rec other = { .path = "/nonexistent/other.so", .nsegs = 1 };
    other.bias = (ra & ~(uint64_t)4095) - 0x10000;
    other.segs[0][0] = ra & ~(uint64_t)4095;
    other.segs[0][1] = (ra & ~(uint64_t)4095) + 4096;
    add(s, &other, NULL);
    cr_assert_eq(mt_symbolize(s, ra, false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_NO_FILE);
    cr_expect_str_eq(f[0].module, other.path);
    cr_expect_eq(f[0].offset, ra - other.bias);
    /* Outside that page the first module still answers. */
    uint64_t ra2 = (uintptr_t)self_outer();
    if (ra2 >> 12 != ra >> 12) {
        cr_assert_eq(mt_symbolize(s, ra2, false, f, 4), 2);
        cr_expect_eq(f[0].status, MT_FRAME_OK);
    }
    /* The first module listed again wins again. */
    add(s, &m, NULL);
    cr_assert_eq(mt_symbolize(s, ra, false, f, 4), 1);
    cr_expect_eq(f[0].status, MT_FRAME_OK);
    cr_expect_str_eq(f[0].function, "self_direct");
    mt_symbolizer_free(s);
}

static unsigned open_fds(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

Test(symbolize, many_modules)
{
    /* 200 copies of this binary, each loaded 64 GiB further up: more
     * than stay open at once, so some are closed and opened again. */
    struct mod_rec m = self_module();
    uint64_t ra1 = (uintptr_t)self_direct(), ra2 = (uintptr_t)self_outer();
    struct mt_symbolizer *s = new_symbolizer();
    unsigned fds0 = open_fds();
    const unsigned copies = 200;
    const uint64_t step = 1ull << 36;
    for (unsigned i = 0; i < copies; i++) {
        struct mod_rec c = m;
        c.bias += i * step;
        for (uint32_t k = 0; k < c.nsegs; k++) {
            c.segs[k][0] += i * step;
            c.segs[k][1] += i * step;
        }
        add(s, &c, NULL);
    }
    struct mt_frame_info f[8];
    for (unsigned i = 0; i < copies; i++) {
        cr_assert_eq(mt_symbolize(s, ra1 + i * step, false, f, 8), 1);
        expect_frame(&f[0], "self_direct", "test-symbolize.c", (unsigned)self_direct_line, false);
        cr_expect_eq(f[0].offset, ra1 - m.bias);
    }
    /* One descriptor per open copy here (its debug info is inside): with
     * every copy kept open there would be 200. */
    cr_expect_lt(open_fds(), fds0 + 130, "%u descriptors open", open_fds() - fds0);
    /* New addresses in the first copies, closed by now. */
    for (unsigned i = 0; i < 3; i++) {
        cr_assert_eq(mt_symbolize(s, ra2 + i * step, false, f, 8), 2);
        expect_frame(&f[1], "self_outer", "test-symbolize.c", (unsigned)self_call_line, false);
    }
    /* Cached answers of closed modules still have their strings. */
    cr_assert_eq(mt_symbolize(s, ra1 + step, false, f, 8), 1);
    expect_frame(&f[0], "self_direct", "test-symbolize.c", (unsigned)self_direct_line, false);
    mt_symbolizer_free(s);
    cr_expect_eq(open_fds(), fds0);
}

Test(symbolize, stripped_libc_names)
{
    /* A system library: names at least from .dynsym (or its debug file). */
    struct mod_rec m;
    memset(&m, 0, sizeof(m));
    struct find_self fs = { (uintptr_t)&fopen, &m, false };
    dl_iterate_phdr(find_self_cb, &fs);
    cr_assert(fs.found);
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, NULL);
    struct mt_frame_info f[8];
    unsigned n = mt_symbolize(s, (uintptr_t)&fopen, true, f, 8);
    cr_assert_geq(n, 1);
    cr_expect_eq(f[n - 1].status, MT_FRAME_OK);
    cr_expect_not_null(f[n - 1].function);
    cr_expect(strstr(f[n - 1].function, "fopen") != NULL, "fopen named %s", f[n - 1].function);
    mt_symbolizer_free(s);
}

/* ---- the program under libmemtrace.so --------------------------------------- */

struct node {
    uint64_t parent, ip;
};

struct trace {
    struct mod_rec *mods;
    size_t nmods;
    size_t prog; /* index of the program's module */
    struct node *nodes;
    size_t nnodes;
    uint64_t direct_stack, inline_stack;
    int direct_line, inline_line, call_line;
};

static void read_trace(const char *path, const char *prog_path, struct trace *t)
{
    struct mt_reader *r;
    struct mt_error err = { "" };
    cr_assert_eq(mt_reader_open(path, &r, &err), 0, "%s", err.msg);
    memset(t, 0, sizeof(*t));
    t->prog = SIZE_MAX;
    struct mt_record rec;
    int rc;
    while ((rc = mt_reader_next(r, &rec)) > 0) {
        if (rec.type == MT_REC_MODULE && rec.kind == MT_MODULE_LOAD) {
            t->mods = realloc(t->mods, (t->nmods + 1) * sizeof(*t->mods));
            cr_assert_not_null(t->mods);
            struct mod_rec *m = &t->mods[t->nmods];
            memset(m, 0, sizeof(*m));
            cr_assert_lt(rec.path_len, sizeof(m->path));
            memcpy(m->path, rec.path, rec.path_len);
            m->bias = rec.bias;
            m->nsegs = rec.nsegs < MT_MAX_SEGMENTS ? rec.nsegs : MT_MAX_SEGMENTS;
            memcpy(m->segs, rec.segs, m->nsegs * sizeof(m->segs[0]));
            m->build_id_len = rec.build_id_len;
            memcpy(m->build_id, rec.build_id, rec.build_id_len);
            if (!strcmp(m->path, prog_path))
                t->prog = t->nmods;
            t->nmods++;
        } else if (rec.type == MT_REC_STACK) {
            cr_assert_lt(rec.stack_id, 10000000);
            if (rec.stack_id >= t->nnodes) {
                size_t n = rec.stack_id * 2 + 16;
                t->nodes = realloc(t->nodes, n * sizeof(*t->nodes));
                cr_assert_not_null(t->nodes);
                memset(t->nodes + t->nnodes, 0, (n - t->nnodes) * sizeof(*t->nodes));
                t->nnodes = n;
            }
            t->nodes[rec.stack_id] = (struct node){ rec.parent_id, rec.ip };
        } else if (rec.type == MT_REC_ALLOC && rec.size == SYM_DIRECT_SIZE) {
            t->direct_stack = rec.stack_id;
        } else if (rec.type == MT_REC_ALLOC && rec.size == SYM_INLINE_SIZE) {
            t->inline_stack = rec.stack_id;
        }
    }
    cr_assert_eq(rc, 0, "%s", mt_reader_error(r));
    mt_reader_close(r);
    cr_assert_neq(t->prog, SIZE_MAX, "no MODULE record for %s", prog_path);
    cr_assert(t->direct_stack && t->direct_stack < t->nnodes && t->nodes[t->direct_stack].ip);
    cr_assert(t->inline_stack && t->inline_stack < t->nnodes && t->nodes[t->inline_stack].ip);
}

static void free_trace(struct trace *t)
{
    free(t->mods);
    free(t->nodes);
}

/* Runs the program preloaded and reads its trace. */
static void run_program(struct trace *t)
{
#ifdef SANITIZED
    cr_skip_test("libmemtrace.so cannot be preloaded in a sanitizer build");
#endif
    char prog[PATH_MAX], trace[PATH_MAX + 16], out[PATH_MAX + 16];
    cr_assert_not_null(realpath(env("MEMTRACE_TEST_SYMBOLS"), prog));
    snprintf(trace, sizeof(trace), "%s/t.bin", tmpdir);
    snprintf(out, sizeof(out), "%s/stdout", tmpdir);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        setenv("LD_PRELOAD", env("MEMTRACE_TEST_LIB"), 1);
        setenv("MEMTRACE_OUTPUT", trace, 1);
        setenv("MEMTRACE_SESSION", "", 1);
        execl(prog, prog, (char *)NULL);
        _exit(127);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x", status);
    read_trace(trace, prog, t);
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    cr_assert_eq(fscanf(f, "direct %d inline %d call %d", &t->direct_line, &t->inline_line, &t->call_line), 3);
    fclose(f);
}

/* A symbolizer holding every module of the trace, the program's under
 * prog_path (NULL: its own) and with its build-id as recorded unless
 * flip_build_id. */
static struct mt_symbolizer *trace_symbolizer(const struct trace *t, const char *prog_path, bool flip_build_id)
{
    struct mt_symbolizer *s = new_symbolizer();
    for (size_t i = 0; i < t->nmods; i++) {
        struct mod_rec m = t->mods[i];
        if (i == t->prog && flip_build_id)
            m.build_id[m.build_id_len - 1] ^= 1;
        add(s, &m, i == t->prog ? prog_path : NULL);
    }
    return s;
}

static bool have_tools(void)
{
    return system("command -v strip >/dev/null 2>&1 && command -v objcopy >/dev/null 2>&1") == 0;
}

/* Runs a shell command in tmpdir. */
static void shell(const char *fmt, const char *a, const char *b)
{
    static char cmd[8 * PATH_MAX], body[4 * PATH_MAX];
    snprintf(body, sizeof(body), fmt, a, b);
    cr_assert_lt(strlen(tmpdir) + strlen(body), sizeof(cmd) - 16);
    snprintf(cmd, sizeof(cmd), "cd '%.*s' && %s", PATH_MAX, tmpdir, body);
    cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
}

static char *in_tmp(const char *name)
{
    static char buf[4][PATH_MAX + 64];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return p;
}

/* Checks both allocations against the program's lines (full debug info). */
static void expect_full(struct mt_symbolizer *s, const struct trace *t)
{
    struct mt_frame_info f[8];
    unsigned n = mt_symbolize(s, t->nodes[t->direct_stack].ip, false, f, 8);
    cr_assert_eq(n, 1, "%u frames", n);
    expect_frame(&f[0], "direct_alloc", "/symbols.c", (unsigned)t->direct_line, false);
    n = mt_symbolize(s, t->nodes[t->inline_stack].ip, false, f, 8);
    cr_assert_eq(n, 2, "%u frames", n);
    expect_frame(&f[0], "inline_alloc", "/symbols.c", (unsigned)t->inline_line, true);
    expect_frame(&f[1], "outer_alloc", "/symbols.c", (unsigned)t->call_line, false);
    /* The caller of direct_alloc is main. */
    uint64_t parent = t->nodes[t->direct_stack].parent;
    cr_assert(parent && parent < t->nnodes);
    n = mt_symbolize(s, t->nodes[parent].ip, false, f, 8);
    cr_assert_eq(n, 1);
    expect_frame(&f[0], "main", "/symbols.c", f[0].line, false);
    cr_expect_gt(f[0].line, (unsigned)t->call_line);
}

/* Checks both allocations name their functions, with no file:line. */
static void expect_names_only(struct mt_symbolizer *s, const struct trace *t)
{
    struct mt_frame_info f[8];
    unsigned n = mt_symbolize(s, t->nodes[t->direct_stack].ip, false, f, 8);
    cr_assert_eq(n, 1);
    expect_frame(&f[0], "direct_alloc", NULL, 0, false);
    n = mt_symbolize(s, t->nodes[t->inline_stack].ip, false, f, 8);
    cr_assert_eq(n, 1);
    expect_frame(&f[0], "outer_alloc", NULL, 0, false);
}

Test(symbolize, program_lines_and_inlining)
{
    struct trace t;
    run_program(&t);
    struct mt_symbolizer *s = trace_symbolizer(&t, NULL, false);
    expect_full(s, &t);
    /* Every frame of both stacks comes out with a module and no error. */
    uint64_t ids[2] = { t.direct_stack, t.inline_stack };
    for (int k = 0; k < 2; k++) {
        unsigned depth = 0;
        bool saw_main = false;
        for (uint64_t id = ids[k]; id && depth < MT_MAX_FRAMES; id = t.nodes[id].parent, depth++) {
            cr_assert_lt(id, t.nnodes);
            struct mt_frame_info f[8];
            unsigned n = mt_symbolize(s, t.nodes[id].ip, false, f, 8);
            cr_assert_geq(n, 1);
            cr_expect_eq(f[n - 1].status, MT_FRAME_OK, "frame %u: status %d", depth, f[n - 1].status);
            saw_main |= f[n - 1].function && !strcmp(f[n - 1].function, "main");
        }
        cr_expect(saw_main);
    }
    mt_symbolizer_free(s);
    free_trace(&t);
}

Test(symbolize, program_build_id_mismatch)
{
    struct trace t;
    run_program(&t);
    struct mt_symbolizer *s = trace_symbolizer(&t, NULL, true);
    struct mt_frame_info f[8];
    uint64_t ips[3] = { t.nodes[t.direct_stack].ip, t.nodes[t.inline_stack].ip,
                        t.nodes[t.nodes[t.direct_stack].parent].ip };
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(mt_symbolize(s, ips[i], false, f, 8), 1);
        cr_expect_eq(f[0].status, MT_FRAME_MISMATCH);
        cr_expect_null(f[0].function);
        cr_expect_null(f[0].file);
    }
    uint64_t asked, unresolved[5];
    mt_symbolizer_stats(s, &asked, unresolved);
    cr_expect_eq(asked, 3);
    cr_expect_eq(unresolved[MT_FRAME_MISMATCH], 3);
    mt_symbolizer_free(s);
    free_trace(&t);
}

Test(symbolize, program_missing_file)
{
    struct trace t;
    run_program(&t);
    struct mt_symbolizer *s = trace_symbolizer(&t, in_tmp("no-such-program"), false);
    struct mt_frame_info f[8];
    cr_assert_eq(mt_symbolize(s, t.nodes[t.direct_stack].ip, false, f, 8), 1);
    cr_expect_eq(f[0].status, MT_FRAME_NO_FILE);
    mt_symbolizer_free(s);
    free_trace(&t);
}

Test(symbolize, program_stripped_debug)
{
    if (!have_tools())
        cr_skip_test("strip or objcopy missing");
    struct trace t;
    run_program(&t);
    shell("cp '%s' copy && strip --strip-debug copy", t.mods[t.prog].path, NULL);
    struct mt_symbolizer *s = trace_symbolizer(&t, in_tmp("copy"), false);
    expect_names_only(s, &t);
    mt_symbolizer_free(s);
    free_trace(&t);
}

Test(symbolize, program_stripped_all)
{
    if (!have_tools())
        cr_skip_test("strip or objcopy missing");
    struct trace t;
    run_program(&t);
    shell("cp '%s' copy && strip --strip-all copy", t.mods[t.prog].path, NULL);
    /* Only .dynsym is left (the program is linked with -rdynamic). */
    cr_assert_neq(system("readelf -S copy 2>/dev/null | grep -q '\\.symtab'"), 0);
    struct mt_symbolizer *s = trace_symbolizer(&t, in_tmp("copy"), false);
    expect_names_only(s, &t);
    mt_symbolizer_free(s);
    free_trace(&t);
}

Test(symbolize, program_debuglink)
{
    if (!have_tools())
        cr_skip_test("strip or objcopy missing");
    struct trace t;
    run_program(&t);
    shell("objcopy --only-keep-debug '%s' symbols.dbg && cp '%s' linked && strip --strip-debug linked && "
          "objcopy --add-gnu-debuglink=symbols.dbg linked",
          t.mods[t.prog].path, t.mods[t.prog].path);
    struct mt_symbolizer *s = trace_symbolizer(&t, in_tmp("linked"), false);
    expect_full(s, &t);
    mt_symbolizer_free(s);
    free_trace(&t);
}

Test(symbolize, program_build_id_debug_dir)
{
    if (!have_tools())
        cr_skip_test("strip or objcopy missing");
    struct trace t;
    run_program(&t);
    const struct mod_rec *m = &t.mods[t.prog];
    cr_assert_geq(m->build_id_len, 2);
    char dir[8], rest[2 * MT_MAX_BUILD_ID + 8];
    snprintf(dir, sizeof(dir), "%02x", m->build_id[0]);
    for (uint32_t i = 1; i < m->build_id_len; i++)
        snprintf(rest + 2 * (i - 1), 3, "%02x", m->build_id[i]);
    char sub[PATH_MAX];
    snprintf(sub, sizeof(sub), "dbg/.build-id/%s/%s.debug", dir, rest);
    shell("mkdir -p dbg/.build-id/%s && cp '%s' bare && strip --strip-debug bare", dir, m->path);
    shell("objcopy --only-keep-debug '%s' '%s'", m->path, sub);
    struct mt_symbolizer *s = new_symbolizer();
    /* Without the directory in the path: names only. */
    for (size_t i = 0; i < t.nmods; i++)
        add(s, &t.mods[i], i == t.prog ? in_tmp("bare") : NULL);
    expect_names_only(s, &t);
    mt_symbolizer_free(s);
    s = new_symbolizer();
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "-:.debug:%s", in_tmp("dbg"));
    cr_assert_eq(mt_symbolizer_set_debug_path(s, path), 0);
    for (size_t i = 0; i < t.nmods; i++)
        add(s, &t.mods[i], i == t.prog ? in_tmp("bare") : NULL);
    expect_full(s, &t);
    mt_symbolizer_free(s);
    free_trace(&t);
}

/* ---- copies of this binary (these run in sanitizer builds too) ------------- */

static void expect_self(struct mt_symbolizer *s, bool lines)
{
    uint64_t ra1 = (uintptr_t)self_direct(), ra2 = (uintptr_t)self_outer();
    struct mt_frame_info f[8];
    if (lines) {
        cr_assert_eq(mt_symbolize(s, ra1, false, f, 8), 1);
        expect_frame(&f[0], "self_direct", "test-symbolize.c", (unsigned)self_direct_line, false);
        cr_assert_eq(mt_symbolize(s, ra2, false, f, 8), 2);
        expect_frame(&f[0], "self_inline", "test-symbolize.c", (unsigned)self_inline_line, true);
        expect_frame(&f[1], "self_outer", "test-symbolize.c", (unsigned)self_call_line, false);
    } else {
        cr_assert_eq(mt_symbolize(s, ra1, false, f, 8), 1);
        expect_frame(&f[0], "self_direct", NULL, 0, false);
        cr_assert_eq(mt_symbolize(s, ra2, false, f, 8), 1);
        expect_frame(&f[0], "self_outer", NULL, 0, false);
    }
}

Test(symbolize, self_copy_stripped_debug)
{
    if (!have_tools())
        cr_skip_test("strip or objcopy missing");
    struct mod_rec m = self_module();
    shell("cp '%s' copy && strip --strip-debug copy", m.path, NULL);
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, in_tmp("copy"));
    expect_self(s, false);
    mt_symbolizer_free(s);
}

Test(symbolize, self_copy_stripped_all)
{
    if (!have_tools())
        cr_skip_test("strip or objcopy missing");
    struct mod_rec m = self_module();
    shell("cp '%s' copy && strip --strip-all copy", m.path, NULL);
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, in_tmp("copy"));
    /* Not exported, so in no symbol table left. */
    struct mt_frame_info f[8];
    cr_assert_eq(mt_symbolize(s, (uintptr_t)self_direct(), false, f, 8), 1);
    cr_expect_eq(f[0].status, MT_FRAME_NO_SYMBOL);
    cr_expect_null(f[0].function);
    cr_expect_null(f[0].file);
    cr_expect_str_eq(f[0].module, in_tmp("copy"));
    uint64_t asked, unresolved[5];
    mt_symbolizer_stats(s, &asked, unresolved);
    cr_expect_eq(asked, 1);
    cr_expect_eq(unresolved[MT_FRAME_NO_SYMBOL], 1);
    mt_symbolizer_free(s);
}

Test(symbolize, self_copy_debuglink)
{
    if (!have_tools())
        cr_skip_test("strip or objcopy missing");
    struct mod_rec m = self_module();
    shell("objcopy --only-keep-debug '%s' self.dbg && cp '%s' linked && strip --strip-debug linked && "
          "objcopy --add-gnu-debuglink=self.dbg linked",
          m.path, m.path);
    struct mt_symbolizer *s = new_symbolizer();
    add(s, &m, in_tmp("linked"));
    expect_self(s, true);
    mt_symbolizer_free(s);
}
