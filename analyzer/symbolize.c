/* Symbolizer: see symbolize.h.
 *
 * Modules. Every MODULE record becomes a struct module (an identical
 * record seen again, as the recorder re-emits its list, reuses the first
 * one). Their segments are painted, in the order they were added, onto one
 * sorted array of disjoint intervals -> module, so the latest module wins
 * where ranges overlap and finding the module of an address is a binary
 * search. A module's file is opened the first time an address in it is
 * asked for: one Dwfl session per module (libdwfl, offline), the file
 * reported at the recorded load bias, so libdw works in runtime addresses
 * directly. libdwfl finds the separate debug file by build-id under the
 * absolute directories of the debug path, or by .gnu_debuglink next to the
 * file, in its .debug/ and under /usr/lib/debug (and the dwz alt file);
 * it checks the debug file's build-id against the main file's. Before any
 * of that, the main file's NT_GNU_BUILD_ID must equal the recorded bytes
 * (both empty counts as equal), else the module is MISMATCH for good; a
 * path that cannot be opened (the vdso has no file at all) is NO_FILE.
 * An open module holds file descriptors (the file, its debug and dwz
 * files, two sockets of the debuginfod client libdw makes per session), so
 * at most MAX_OPEN_MODULES stay open; the least recently asked is closed
 * for the next (a trace of a big Python program touches hundreds of
 * libraries, and the usual limit is 1024 descriptors). libdw asks
 * debuginfod for debug files found nowhere else when DEBUGINFOD_URLS is
 * set, as the elfutils tools do.
 *
 * Frames. With DWARF, libdwfl finds the CU of the address (aranges) and
 * the line table its file:line. The first time an address falls in a CU,
 * one walk of the CU's DIEs lists its concrete functions (every
 * DW_TAG_subprogram with code, nested ones included) by address range;
 * each address then costs a binary search there and a walk down that one
 * function's children (lexical blocks and inlined subroutines containing
 * it), skipping subtrees through DW_AT_sibling. dwarf_getscopes would walk
 * the CU per address, and its result stops at the innermost inlined
 * instance (dwarf_getscopes_die then walks the whole CU again): 13 times
 * slower on libc. The innermost function gets the line table's file:line,
 * each one out the DW_AT_call_file / DW_AT_call_line of the inlined
 * subroutine inside it; names are the linkage name demangled, else
 * DW_AT_name (both followed through abstract_origin and specification);
 * the containing function takes its (mangled) symbol name when DWARF has
 * only a bare one. Without DWARF for the address, the function comes from
 * the symbol table libdwfl picks (.symtab of the file or of its debug
 * file, else .dynsym, plus .gnu_debugdata), loaded once per module into a
 * sorted array: libdwfl's own dwfl_module_addrsym scans every symbol per
 * lookup (0.6 ms each in libtorch_cpu's 35,000 .dynsym entries). Sized
 * symbols cover [value, value + size), so padding between functions and
 * local functions of a library stripped to .dynsym stay unnamed rather
 * than take a neighbour's name; a zero-size function symbol covers up to
 * the next symbol or the end of its section.
 *
 * Cache. Results are stored per (module, address, exact) in an open
 * addressing hash table pointing into one growing array of frames;
 * function and file names are interned in an arena and module paths belong
 * to their module, so every pointer handed out lives until
 * mt_symbolizer_free, and a raw symbol name is demangled once. If memory runs out the answer is still returned (from a
 * scratch array), just not cached; names that cannot be stored come back
 * NULL.
 */
#include "symbolize.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef MT_HAVE_CXA_DEMANGLE
/* From libstdc++ (the C++ ABI library); declared here to stay in C. */
extern char *__cxa_demangle(const char *mangled, char *buf, size_t *len, int *status);
#endif

#define DEFAULT_DEBUG_PATH "-:.debug:/usr/lib/debug"
#define MAX_INLINE_FRAMES 63 /* deeper inline chains keep the innermost */
#define NO_MODULE_IDX UINT32_MAX
#define SYM_SCAN_BACK 64
/* Open modules hold file descriptors (the file, its debug file, the dwz
 * file, and libdw's debuginfod client keeps two sockets per session):
 * past this many, the least recently used one is closed. */
#define MAX_OPEN_MODULES 64

enum mod_state { MOD_UNOPENED, MOD_OPEN, MOD_NO_FILE, MOD_MISMATCH };
/* MOD_UNOPENED also covers a module closed to make room; reopening it
 * checks the file again. */

struct sym {
    uint64_t lo, hi;
    const char *name; /* in the ELF's string table, valid while open */
    uint8_t rank;     /* preference among aliases, smaller is better */
};

struct fn_range {
    uint64_t lo, hi; /* DWARF addresses */
    Dwarf_Die die;   /* the DW_TAG_subprogram */
};

struct cu_index {
    uint64_t off; /* of the CU DIE */
    struct fn_range *fns;
    size_t nfns;
    bool used;
};

struct module {
    char *path;
    uint64_t bias;
    uint8_t *build_id;
    uint32_t build_id_len;
    uint64_t (*segs)[2];
    uint32_t nsegs;
    enum mod_state state;
    Dwfl *dwfl;
    Dwfl_Module *dm;
    struct sym *syms;
    size_t nsyms;
    bool syms_loaded;
    struct cu_index *cus; /* hash table by CU offset */
    size_t cus_cap, ncus;
    uint64_t last_use;    /* s->tick when last asked */
};

struct interval {
    uint64_t lo, hi;
    uint32_t mod;
};

/* Cache entry: key (ip, mod, exact); tag 0 = empty slot. */
struct centry {
    uint64_t ip;
    uint32_t mod;
    uint32_t tag; /* 0 empty, 1 inexact, 2 exact */
    uint32_t first;
    uint32_t count;
};

struct istr {
    const char *str;
    const char *demangled; /* NULL until asked */
    uint64_t hash;
};

struct arena_block {
    struct arena_block *next;
    size_t used, size;
    char data[];
};

struct mt_symbolizer {
    struct module *mods;
    uint32_t nmods, cap_mods;

    struct interval *ivs;
    size_t nivs, cap_ivs;

    struct centry *cache;
    size_t cache_cap, cache_used; /* cap is a power of two */
    struct mt_frame_info *pool;
    size_t npool, cap_pool;

    struct istr *strs;
    size_t strs_cap, strs_used;
    struct arena_block *arena;

    struct mt_frame_info scratch[MAX_INLINE_FRAMES + 1];

    char *debug_path;
    Dwfl_Callbacks callbacks;

    uint32_t nopen; /* modules in MOD_OPEN */
    uint64_t tick;

    uint64_t asked;
    uint64_t unresolved[5];
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static char *arena_copy(struct mt_symbolizer *s, const char *str, size_t len)
{
    struct arena_block *b = s->arena;
    if (!b || b->size - b->used < len + 1) {
        size_t size = len + 1 > 65536 ? len + 1 : 65536;
        b = malloc(sizeof(*b) + size);
        if (!b)
            return NULL;
        b->size = size;
        b->used = 0;
        b->next = s->arena;
        s->arena = b;
    }
    char *out = b->data + b->used;
    memcpy(out, str, len);
    out[len] = 0;
    b->used += len + 1;
    return out;
}

/* The interned entry for str (added if new), or NULL without memory. */
static struct istr *intern_entry(struct mt_symbolizer *s, const char *str)
{
    size_t len = strlen(str);
    uint64_t h = hash_bytes(str, len);
    if ((s->strs_used + 1) * 10 > s->strs_cap * 7) {
        size_t ncap = s->strs_cap ? s->strs_cap * 2 : 1024;
        struct istr *n = calloc(ncap, sizeof(*n));
        if (!n)
            return NULL;
        for (size_t i = 0; i < s->strs_cap; i++) {
            if (!s->strs[i].str)
                continue;
            size_t j = s->strs[i].hash & (ncap - 1);
            while (n[j].str)
                j = (j + 1) & (ncap - 1);
            n[j] = s->strs[i];
        }
        free(s->strs);
        s->strs = n;
        s->strs_cap = ncap;
    }
    size_t j = h & (s->strs_cap - 1);
    while (s->strs[j].str) {
        if (s->strs[j].hash == h && !strcmp(s->strs[j].str, str))
            return &s->strs[j];
        j = (j + 1) & (s->strs_cap - 1);
    }
    const char *copy = arena_copy(s, str, len);
    if (!copy)
        return NULL;
    s->strs[j].str = copy;
    s->strs[j].demangled = NULL;
    s->strs[j].hash = h;
    s->strs_used++;
    return &s->strs[j];
}

static const char *intern(struct mt_symbolizer *s, const char *str)
{
    if (!str)
        return NULL;
    struct istr *e = intern_entry(s, str);
    return e ? e->str : NULL;
}

/* The display form of a raw (possibly mangled) name, interned. */
static const char *function_name(struct mt_symbolizer *s, const char *raw)
{
    if (!raw || !*raw)
        return NULL;
    struct istr *e = intern_entry(s, raw);
    if (!e)
        return NULL;
    if (e->demangled)
        return e->demangled;
    const char *out = e->str;
#ifdef MT_HAVE_CXA_DEMANGLE
    if (raw[0] == '_' && raw[1] == 'Z') {
        int status = -1;
        char *d = __cxa_demangle(raw, NULL, NULL, &status);
        if (d && status == 0) {
            const char *in = intern(s, d);
            if (in)
                out = in;
        }
        free(d);
        /* intern() may have moved the table: look the entry up again. */
        e = intern_entry(s, raw);
        if (!e)
            return out;
    }
#endif
    e->demangled = out;
    return out;
}

/* ---- modules and the interval map ---------------------------------------- */

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

/* Paints [lo, hi) -> mod over whatever was there. */
static int paint(struct mt_symbolizer *s, uint64_t lo, uint64_t hi, uint32_t mod)
{
    if (lo >= hi)
        return 0;
    if (grow((void **)&s->ivs, &s->cap_ivs, s->nivs + 2, sizeof(*s->ivs)))
        return -ENOMEM;
    /* i: first interval ending after lo; j: first starting at or after hi. */
    size_t a = 0, b = s->nivs;
    while (a < b) {
        size_t m = (a + b) / 2;
        if (s->ivs[m].hi <= lo)
            a = m + 1;
        else
            b = m;
    }
    size_t i = a, j = i;
    while (j < s->nivs && s->ivs[j].lo < hi)
        j++;
    struct interval repl[3];
    size_t nr = 0;
    if (i < j && s->ivs[i].lo < lo)
        repl[nr++] = (struct interval){ s->ivs[i].lo, lo, s->ivs[i].mod };
    repl[nr++] = (struct interval){ lo, hi, mod };
    if (i < j && s->ivs[j - 1].hi > hi)
        repl[nr++] = (struct interval){ hi, s->ivs[j - 1].hi, s->ivs[j - 1].mod };
    /* Replace ivs[i, j) by repl[0, nr). */
    size_t removed = j - i;
    if (nr > removed && grow((void **)&s->ivs, &s->cap_ivs, s->nivs + nr - removed, sizeof(*s->ivs)))
        return -ENOMEM;
    memmove(&s->ivs[i + nr], &s->ivs[j], (s->nivs - j) * sizeof(*s->ivs));
    memcpy(&s->ivs[i], repl, nr * sizeof(*repl));
    s->nivs = s->nivs - removed + nr;
    return 0;
}

static uint32_t find_module(const struct mt_symbolizer *s, uint64_t addr)
{
    size_t a = 0, b = s->nivs;
    while (a < b) {
        size_t m = (a + b) / 2;
        if (s->ivs[m].hi <= addr)
            a = m + 1;
        else
            b = m;
    }
    if (a < s->nivs && s->ivs[a].lo <= addr)
        return s->ivs[a].mod;
    return NO_MODULE_IDX;
}

const char *mt_symbolizer_module_path(const struct mt_symbolizer *s, uint64_t ip)
{
    uint32_t m = find_module(s, ip);
    return m == NO_MODULE_IDX ? NULL : s->mods[m].path;
}

static bool same_module(const struct module *m, const char *path, size_t path_len, uint64_t bias,
                        const uint64_t (*segs)[2], uint32_t nsegs, const uint8_t *build_id,
                        uint32_t build_id_len)
{
    return m->bias == bias && m->nsegs == nsegs && m->build_id_len == build_id_len &&
           strlen(m->path) == path_len && !memcmp(m->path, path, path_len) &&
           (!build_id_len || !memcmp(m->build_id, build_id, build_id_len)) &&
           (!nsegs || !memcmp(m->segs, segs, nsegs * sizeof(*segs)));
}

int mt_symbolizer_add_module(struct mt_symbolizer *s, const char *path, size_t path_len, uint64_t bias,
                             const uint64_t (*segs)[2], uint32_t nsegs, const uint8_t *build_id,
                             uint32_t build_id_len)
{
    uint32_t idx = s->nmods;
    for (uint32_t i = s->nmods; i-- > 0;) {
        if (same_module(&s->mods[i], path, path_len, bias, segs, nsegs, build_id, build_id_len)) {
            idx = i;
            break;
        }
    }
    if (idx == s->nmods) {
        if (s->nmods == NO_MODULE_IDX)
            return -ENOMEM;
        size_t cap = s->cap_mods;
        if (grow((void **)&s->mods, &cap, (size_t)s->nmods + 1, sizeof(*s->mods)))
            return -ENOMEM;
        s->cap_mods = (uint32_t)cap;
        struct module *m = &s->mods[idx];
        memset(m, 0, sizeof(*m));
        m->path = malloc(path_len + 1);
        m->build_id = malloc(build_id_len ? build_id_len : 1);
        m->segs = malloc((nsegs ? nsegs : 1) * sizeof(*segs));
        if (!m->path || !m->build_id || !m->segs) {
            free(m->path);
            free(m->build_id);
            free(m->segs);
            return -ENOMEM;
        }
        memcpy(m->path, path, path_len);
        m->path[path_len] = 0;
        if (build_id_len)
            memcpy(m->build_id, build_id, build_id_len);
        if (nsegs)
            memcpy(m->segs, segs, nsegs * sizeof(*segs));
        m->build_id_len = build_id_len;
        m->nsegs = nsegs;
        m->bias = bias;
        m->state = MOD_UNOPENED;
        s->nmods++;
    }
    for (uint32_t k = 0; k < nsegs; k++)
        if (paint(s, segs[k][0], segs[k][1], idx))
            return -ENOMEM;
    return 0;
}

static bool is_vdso(const char *path)
{
    return !*path || !strncmp(path, "linux-vdso", 10) || !strncmp(path, "linux-gate", 10) ||
           !strcmp(path, "[vdso]");
}

/* Frees what points into the module's files; answers already cached keep
 * their own copies of every string. */
static void close_module(struct mt_symbolizer *s, struct module *m)
{
    if (m->dwfl) {
        dwfl_end(m->dwfl);
        s->nopen--;
    }
    m->dwfl = NULL;
    m->dm = NULL;
    free(m->syms);
    m->syms = NULL;
    m->nsyms = 0;
    m->syms_loaded = false;
    for (size_t k = 0; k < m->cus_cap; k++)
        free(m->cus[k].fns);
    free(m->cus);
    m->cus = NULL;
    m->cus_cap = m->ncus = 0;
    if (m->state == MOD_OPEN)
        m->state = MOD_UNOPENED;
}

/* Closes the least recently asked open module; false if none is open. */
static bool close_lru(struct mt_symbolizer *s)
{
    struct module *lru = NULL;
    for (uint32_t i = 0; i < s->nmods; i++)
        if (s->mods[i].state == MOD_OPEN && (!lru || s->mods[i].last_use < lru->last_use))
            lru = &s->mods[i];
    if (lru)
        close_module(s, lru);
    return lru != NULL;
}

static void open_module(struct mt_symbolizer *s, struct module *m)
{
    if (s->nopen >= MAX_OPEN_MODULES)
        close_lru(s);
    m->state = MOD_NO_FILE;
    if (is_vdso(m->path))
        return;
    int fd = open(m->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && close_lru(s))
        fd = open(m->path, O_RDONLY | O_CLOEXEC); /* out of descriptors */
    if (fd < 0)
        return;
    /* From here on the file exists: anything unusable is not the file
     * that was loaded. */
    m->state = MOD_MISMATCH;
    Dwfl *dwfl = dwfl_begin(&s->callbacks);
    if (!dwfl) {
        close(fd);
        m->state = MOD_NO_FILE;
        return;
    }
    dwfl_report_begin(dwfl);
    /* ET_DYN: placed at the bias (add_p_vaddr); ET_EXEC: at its vaddrs. */
    Dwfl_Module *dm = dwfl_report_elf(dwfl, m->path, m->path, fd, m->bias, true);
    if (!dm) {
        close(fd);
        dwfl_end(dwfl);
        return;
    }
    dwfl_report_end(dwfl, NULL, NULL);
    Dwarf_Addr ebias;
    if (!dwfl_module_getelf(dm, &ebias)) {
        dwfl_end(dwfl);
        return;
    }
    const unsigned char *bits = NULL;
    GElf_Addr vaddr;
    int n = dwfl_module_build_id(dm, &bits, &vaddr);
    if (n < 0)
        n = 0;
    if ((uint32_t)n != m->build_id_len || (n && memcmp(bits, m->build_id, (size_t)n))) {
        dwfl_end(dwfl);
        return;
    }
    m->dwfl = dwfl;
    m->dm = dm;
    m->state = MOD_OPEN;
    s->nopen++;
}

/* ---- symbol table ---------------------------------------------------------- */

static int cmp_sym(const void *pa, const void *pb)
{
    const struct sym *a = pa, *b = pb;
    int c = cmp_u64(a->lo, b->lo);
    if (c)
        return c;
    return (a->rank > b->rank) - (a->rank < b->rank);
}

static unsigned leading_underscores(const char *n)
{
    unsigned k = 0;
    while (n[k] == '_' && k < 3)
        k++;
    return k;
}

/* End of the section a symbol is defined in, in module addresses. */
static uint64_t section_end(Elf *elf, GElf_Word shndx, Dwarf_Addr bias)
{
    if (!elf)
        return UINT64_MAX;
    Elf_Scn *scn = elf_getscn(elf, shndx);
    GElf_Shdr shdr;
    if (!scn || !gelf_getshdr(scn, &shdr))
        return UINT64_MAX;
    return shdr.sh_addr + shdr.sh_size + bias;
}

static void load_symbols(struct module *m)
{
    m->syms_loaded = true;
    int n = dwfl_module_getsymtab(m->dm);
    if (n <= 1)
        return;
    struct sym *v = malloc((size_t)n * sizeof(*v));
    if (!v)
        return;
    size_t k = 0;
    for (int i = 1; i < n; i++) {
        GElf_Sym sym;
        GElf_Addr addr;
        GElf_Word shndx;
        Elf *elf = NULL;
        Dwarf_Addr bias = 0;
        const char *name = dwfl_module_getsym_info(m->dm, i, &sym, &addr, &shndx, &elf, &bias);
        if (!name || !*name || shndx == SHN_UNDEF || shndx == SHN_ABS || shndx == SHN_COMMON)
            continue;
        int type = GELF_ST_TYPE(sym.st_info), bind = GELF_ST_BIND(sym.st_info);
        if (type != STT_FUNC && type != STT_GNU_IFUNC && !(type == STT_NOTYPE && sym.st_size))
            continue;
        uint64_t hi;
        if (sym.st_size) {
            hi = addr + sym.st_size;
        } else {
            hi = section_end(elf, shndx, bias);
        }
        if (hi <= addr)
            continue;
        unsigned brank = bind == STB_GLOBAL ? 0 : bind == STB_WEAK ? 1 : 2;
        /* sized first, then global > weak > local, then fewer leading _ */
        v[k].lo = addr;
        v[k].hi = hi;
        v[k].name = name;
        v[k].rank = (uint8_t)((sym.st_size ? 0 : 16) + brank * 4 + leading_underscores(name));
        k++;
    }
    qsort(v, k, sizeof(*v), cmp_sym);
    /* One symbol per start address (the best ranked); zero-size ones end
     * at the next start. */
    size_t out = 0;
    for (size_t i = 0; i < k; i++) {
        if (out && v[out - 1].lo == v[i].lo)
            continue;
        v[out++] = v[i];
    }
    for (size_t i = 0; i + 1 < out; i++)
        if (v[i].rank >= 16 && v[i].hi > v[i + 1].lo)
            v[i].hi = v[i + 1].lo;
    m->syms = out ? realloc(v, out * sizeof(*v)) : (free(v), NULL);
    if (out && !m->syms)
        m->syms = v;
    m->nsyms = out;
}

static const char *lookup_symbol(struct module *m, uint64_t addr)
{
    if (!m->syms_loaded)
        load_symbols(m);
    size_t a = 0, b = m->nsyms;
    while (a < b) {
        size_t mid = (a + b) / 2;
        if (m->syms[mid].lo <= addr)
            a = mid + 1;
        else
            b = mid;
    }
    /* a: first symbol starting after addr; look back for one covering it. */
    for (size_t i = a, steps = 0; i-- > 0 && steps < SYM_SCAN_BACK; steps++)
        if (m->syms[i].hi > addr)
            return m->syms[i].name;
    return NULL;
}

/* ---- DWARF ----------------------------------------------------------------- */

/* A CU's concrete functions by address: built the first time an address
 * in that CU is asked (one walk of the CU's DIEs), then a binary search
 * per address and a walk down that one function's scopes. This replaces
 * dwarf_getscopes (a walk of the CU per address) and dwarf_getscopes_die
 * (a walk of the whole CU, unpruned). */
static int cmp_fn(const void *pa, const void *pb)
{
    const struct fn_range *a = pa, *b = pb;
    int c = cmp_u64(a->lo, b->lo);
    return c ? c : cmp_u64(b->hi, a->hi);
}

static int add_ranges(struct cu_index *ci, size_t *cap, Dwarf_Die *die)
{
    Dwarf_Addr base, start, end;
    ptrdiff_t off = 0;
    while ((off = dwarf_ranges(die, off, &base, &start, &end)) > 0) {
        if (start >= end)
            continue;
        if (grow((void **)&ci->fns, cap, ci->nfns + 1, sizeof(*ci->fns)))
            return -ENOMEM;
        ci->fns[ci->nfns++] = (struct fn_range){ start, end, *die };
    }
    return 0;
}

/* Every DW_TAG_subprogram with code in the tree under die (nested ones
 * included: GNU C nested functions, members of local classes). */
static int index_tree(struct cu_index *ci, size_t *cap, Dwarf_Die *die, unsigned depth)
{
    Dwarf_Die child;
    if (depth > 64 || dwarf_child(die, &child) != 0)
        return 0;
    do {
        int tag = dwarf_tag(&child);
        if (tag == DW_TAG_subprogram && add_ranges(ci, cap, &child))
            return -ENOMEM;
        if (dwarf_haschildren(&child) > 0 && index_tree(ci, cap, &child, depth + 1))
            return -ENOMEM;
    } while (dwarf_siblingof(&child, &child) == 0);
    return 0;
}

static struct cu_index *cu_index_of(struct module *m, Dwarf_Die *cu)
{
    uint64_t key = dwarf_dieoffset(cu);
    if ((m->ncus + 1) * 10 > m->cus_cap * 7) {
        size_t ncap = m->cus_cap ? m->cus_cap * 2 : 64;
        struct cu_index *n = calloc(ncap, sizeof(*n));
        if (!n)
            return NULL;
        for (size_t i = 0; i < m->cus_cap; i++) {
            if (!m->cus[i].used)
                continue;
            size_t j = mix64(m->cus[i].off) & (ncap - 1);
            while (n[j].used)
                j = (j + 1) & (ncap - 1);
            n[j] = m->cus[i];
        }
        free(m->cus);
        m->cus = n;
        m->cus_cap = ncap;
    }
    size_t j = mix64(key) & (m->cus_cap - 1);
    while (m->cus[j].used) {
        if (m->cus[j].off == key)
            return &m->cus[j];
        j = (j + 1) & (m->cus_cap - 1);
    }
    struct cu_index *ci = &m->cus[j];
    memset(ci, 0, sizeof(*ci));
    size_t cap = 0;
    if (index_tree(ci, &cap, cu, 0)) {
        free(ci->fns);
        return NULL;
    }
    qsort(ci->fns, ci->nfns, sizeof(*ci->fns), cmp_fn);
    ci->off = key;
    ci->used = true;
    m->ncus++;
    return ci;
}

/* The innermost function of ci covering pc (the smallest of those that
 * do), or NULL. */
static Dwarf_Die *find_function(struct cu_index *ci, uint64_t pc)
{
    size_t a = 0, b = ci->nfns;
    while (a < b) {
        size_t mid = (a + b) / 2;
        if (ci->fns[mid].lo <= pc)
            a = mid + 1;
        else
            b = mid;
    }
    struct fn_range *best = NULL;
    for (size_t i = a, steps = 0; i-- > 0 && steps < SYM_SCAN_BACK; steps++) {
        struct fn_range *f = &ci->fns[i];
        if (f->hi > pc && (!best || f->hi - f->lo < best->hi - best->lo))
            best = f;
    }
    return best ? &best->die : NULL;
}

/* The linkage name of a function DIE, else its plain name (*plain set). */
static const char *die_raw_name(Dwarf_Die *die, bool *plain)
{
    Dwarf_Attribute at;
    const char *n = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_linkage_name, &at));
    if (!n)
        n = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &at));
    *plain = !n;
    if (!n)
        n = dwarf_formstring(dwarf_attr_integrate(die, DW_AT_name, &at));
    return n;
}

static const char *call_site(Dwarf_Die *die, unsigned *line)
{
    Dwarf_Attribute at;
    Dwarf_Word v;
    *line = 0;
    if (dwarf_formudata(dwarf_attr(die, DW_AT_call_line, &at), &v) == 0)
        *line = (unsigned)v;
    if (dwarf_formudata(dwarf_attr(die, DW_AT_call_file, &at), &v) != 0)
        return NULL;
    Dwarf_Die cu;
    Dwarf_Files *files;
    size_t nfiles;
    if (!dwarf_diecu(die, &cu, NULL, NULL) || dwarf_getsrcfiles(&cu, &files, &nfiles) != 0 || v >= nfiles)
        return NULL;
    return dwarf_filesrc(files, v, NULL, NULL);
}

/* The inlined subroutines containing pc under fn, outermost first, into
 * chain (at most max); returns how many. */
static unsigned inline_chain(Dwarf_Die *fn, uint64_t pc, Dwarf_Die *chain, unsigned max)
{
    unsigned n = 0;
    Dwarf_Die cur = *fn, child;
    for (unsigned depth = 0; depth < 256; depth++) {
        if (dwarf_child(&cur, &child) != 0)
            break;
        bool found = false;
        do {
            int tag = dwarf_tag(&child);
            if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_lexical_block && tag != DW_TAG_try_block &&
                tag != DW_TAG_catch_block)
                continue;
            if (dwarf_haspc(&child, pc) > 0) {
                found = true;
                break;
            }
        } while (dwarf_siblingof(&child, &child) == 0);
        if (!found)
            break;
        if (dwarf_tag(&child) == DW_TAG_inlined_subroutine) {
            if (n == max)
                memmove(chain, chain + 1, (max - 1) * sizeof(*chain)); /* keep the innermost */
            chain[n < max ? n++ : max - 1] = child;
        }
        cur = child;
    }
    return n;
}

/* Fills s->scratch from the DWARF of m for addr; returns the count, 0 if
 * there is no DWARF covering addr. The last frame may lack a function. */
static unsigned dwarf_frames(struct mt_symbolizer *s, struct module *m, uint64_t addr,
                             const struct mt_frame_info *tmpl)
{
    Dwarf_Addr dbias;
    Dwarf_Die *cu = dwfl_module_addrdie(m->dm, addr, &dbias);
    if (!cu)
        return 0;
    const char *file = NULL;
    unsigned line = 0;
    Dwfl_Line *l = dwfl_module_getsrc(m->dm, addr);
    if (l) {
        int ln = 0;
        const char *f = dwfl_lineinfo(l, NULL, &ln, NULL, NULL, NULL);
        if (f && ln > 0) {
            file = f;
            line = (unsigned)ln;
        }
    }
    uint64_t pc = addr - dbias;
    struct cu_index *ci = cu_index_of(m, cu);
    Dwarf_Die *fn = ci ? find_function(ci, pc) : NULL;
    unsigned n = 0;
    if (fn) {
        Dwarf_Die chain[MAX_INLINE_FRAMES];
        unsigned k = inline_chain(fn, pc, chain, MAX_INLINE_FRAMES);
        /* Innermost first: each inlined frame at the current location,
         * which then moves to its call site in the next one out. */
        for (unsigned i = k; i-- > 0;) {
            struct mt_frame_info *f = &s->scratch[n++];
            *f = *tmpl;
            bool plain;
            f->function = function_name(s, die_raw_name(&chain[i], &plain));
            f->file = intern(s, file);
            f->line = f->file ? line : 0;
            f->inlined = true;
            file = call_site(&chain[i], &line);
        }
        struct mt_frame_info *f = &s->scratch[n++];
        *f = *tmpl;
        bool plain;
        const char *raw = die_raw_name(fn, &plain);
        if (plain) {
            /* No linkage name (a C++ template over a local type, say):
             * the symbol's mangled name says more than the bare name. */
            const char *sym = lookup_symbol(m, addr);
            if (sym && sym[0] == '_' && sym[1] == 'Z')
                raw = sym;
        }
        f->function = function_name(s, raw);
        f->file = intern(s, file);
        f->line = f->file ? line : 0;
    } else {
        /* DWARF without a function here (assembly, say): keep the line. */
        struct mt_frame_info *f = &s->scratch[n++];
        *f = *tmpl;
        f->file = intern(s, file);
        f->line = f->file ? line : 0;
    }
    return n;
}

/* Computes the frames of addr (ip's call site) in module mi into
 * s->scratch; returns how many. */
static unsigned resolve(struct mt_symbolizer *s, uint32_t mi, uint64_t ip, uint64_t addr)
{
    struct mt_frame_info *f = &s->scratch[0];
    memset(f, 0, sizeof(*f));
    if (mi == NO_MODULE_IDX) {
        f->offset = ip;
        f->status = MT_FRAME_NO_MODULE;
        return 1;
    }
    struct module *m = &s->mods[mi];
    struct mt_frame_info tmpl;
    memset(&tmpl, 0, sizeof(tmpl));
    tmpl.module = m->path;
    tmpl.offset = ip - m->bias;
    tmpl.status = MT_FRAME_OK;
    m->last_use = ++s->tick;
    if (m->state == MOD_UNOPENED)
        open_module(s, m);
    if (m->state != MOD_OPEN) {
        *f = tmpl;
        f->status = m->state == MOD_NO_FILE ? MT_FRAME_NO_FILE : MT_FRAME_MISMATCH;
        return 1;
    }
    unsigned n = dwarf_frames(s, m, addr, &tmpl);
    if (!n) {
        *f = tmpl;
        n = 1;
    }
    struct mt_frame_info *last = &s->scratch[n - 1];
    if (!last->function)
        last->function = function_name(s, lookup_symbol(m, addr));
    if (n == 1 && !last->function && !last->file)
        last->status = MT_FRAME_NO_SYMBOL;
    return n;
}

/* ---- cache ----------------------------------------------------------------- */

static size_t cache_slot(const struct mt_symbolizer *s, uint64_t ip, uint32_t mod, uint32_t tag)
{
    size_t mask = s->cache_cap - 1;
    size_t j = mix64(ip ^ ((uint64_t)mod << 32) ^ tag) & mask;
    while (s->cache[j].tag &&
           !(s->cache[j].ip == ip && s->cache[j].mod == mod && s->cache[j].tag == tag))
        j = (j + 1) & mask;
    return j;
}

static int cache_grow(struct mt_symbolizer *s)
{
    size_t ncap = s->cache_cap ? s->cache_cap * 2 : 4096;
    struct centry *old = s->cache;
    size_t ocap = s->cache_cap;
    struct centry *n = calloc(ncap, sizeof(*n));
    if (!n)
        return -ENOMEM;
    s->cache = n;
    s->cache_cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].tag)
            s->cache[cache_slot(s, old[i].ip, old[i].mod, old[i].tag)] = old[i];
    free(old);
    return 0;
}

static unsigned copy_out(const struct mt_frame_info *src, unsigned n, struct mt_frame_info *dst, unsigned max)
{
    if (n <= max) {
        memcpy(dst, src, n * sizeof(*src));
        return n;
    }
    /* Innermost max - 1, then the containing function. */
    memcpy(dst, src, (max - 1) * sizeof(*src));
    dst[max - 1] = src[n - 1];
    return max;
}

unsigned mt_symbolize(struct mt_symbolizer *s, uint64_t ip, bool exact, struct mt_frame_info *frames,
                      unsigned max)
{
    if (!max)
        return 0;
    uint64_t addr = exact || !ip ? ip : ip - 1;
    uint32_t mi = find_module(s, addr);
    uint32_t tag = exact ? 2 : 1;
    if ((s->cache_used + 1) * 10 > s->cache_cap * 7)
        cache_grow(s); /* on failure the table stays usable while not full */
    size_t j = SIZE_MAX;
    if (s->cache_cap && s->cache_used < s->cache_cap - 1) {
        j = cache_slot(s, ip, mi, tag);
        if (s->cache[j].tag)
            return copy_out(&s->pool[s->cache[j].first], s->cache[j].count, frames, max);
    }
    unsigned n = resolve(s, mi, ip, addr);
    s->asked++;
    if (s->scratch[0].status != MT_FRAME_OK)
        s->unresolved[s->scratch[0].status]++;
    if (j != SIZE_MAX && s->npool + n <= UINT32_MAX &&
        !grow((void **)&s->pool, &s->cap_pool, s->npool + n, sizeof(*s->pool))) {
        memcpy(&s->pool[s->npool], s->scratch, n * sizeof(*s->pool));
        s->cache[j] = (struct centry){ ip, mi, tag, (uint32_t)s->npool, n };
        s->npool += n;
        s->cache_used++;
    }
    return copy_out(s->scratch, n, frames, max);
}

void mt_symbolizer_stats(const struct mt_symbolizer *s, uint64_t *asked, uint64_t unresolved[5])
{
    if (asked)
        *asked = s->asked;
    if (unresolved)
        memcpy(unresolved, s->unresolved, sizeof(s->unresolved));
}

/* ---- life cycle -------------------------------------------------------------- */

int mt_symbolizer_set_debug_path(struct mt_symbolizer *s, const char *path)
{
    char *p = strdup(path ? path : DEFAULT_DEBUG_PATH);
    if (!p)
        return -ENOMEM;
    free(s->debug_path);
    s->debug_path = p;
    return 0;
}

int mt_symbolizer_new(struct mt_symbolizer **out, struct mt_error *err)
{
    struct mt_symbolizer *s = calloc(1, sizeof(*s));
    if (!s || mt_symbolizer_set_debug_path(s, NULL)) {
        free(s);
        mti_error_set(err, "symbolizer: out of memory");
        return -ENOMEM;
    }
    s->callbacks.find_elf = dwfl_build_id_find_elf;
    s->callbacks.find_debuginfo = dwfl_standard_find_debuginfo;
    s->callbacks.section_address = dwfl_offline_section_address;
    s->callbacks.debuginfo_path = &s->debug_path;
    *out = s;
    return 0;
}

void mt_symbolizer_free(struct mt_symbolizer *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->nmods; i++) {
        struct module *m = &s->mods[i];
        close_module(s, m);
        free(m->path);
        free(m->build_id);
        free(m->segs);
    }
    free(s->mods);
    free(s->ivs);
    free(s->cache);
    free(s->pool);
    free(s->strs);
    while (s->arena) {
        struct arena_block *next = s->arena->next;
        free(s->arena);
        s->arena = next;
    }
    free(s->debug_path);
    free(s);
}
