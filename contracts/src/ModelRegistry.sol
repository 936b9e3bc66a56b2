// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ModelRegistry
/// @notice Model id -> (owner, op count, profile id, metadata URI). Anyone may register an unused
/// model id and becomes its owner; only the owner may propose a new profile or hand the model
/// over.
///
/// The model id is the content hash of the exported graph, so it fixes the op count N and the
/// frontier schedule of every trace of the model; `numOps` is recorded at registration and the
/// coordinator takes N from here, never from a prover (a prover that could name N + 1 would
/// push an honest challenger's indices off the end of the model and win by its timeout).
///
/// Profiles are content-addressed (the id is the hash of the profile document) and a result is
/// judged by the profile that was active when it was committed. The owner changes the profile
/// only through a timelock: `proposeProfile` names the next profile, which becomes the active
/// one `profileDelay` blocks later. Everyone (challengers, voters, clients) sees a looser profile
/// coming before any result can be committed against it, and a prover can only commit with the
/// active one (checked by the coordinator), so it cannot pick a looser profile for its job.
contract ModelRegistry {
    struct Model {
        address owner;
        uint32 numOps;
        uint64 pendingFrom; // block from which `pendingProfile` is the active one; 0 = none
        bytes32 profileId; // active until `pendingFrom`
        bytes32 pendingProfile;
        string uri;
    }

    uint64 public immutable profileDelay;

    mapping(bytes32 => Model) private _models;

    event ModelRegistered(
        bytes32 indexed modelId, address indexed owner, bytes32 profileId, uint32 numOps, string uri
    );
    /// The profile `profileId` becomes the active one at block `activeFrom` (state change is
    /// scheduled here; no further event marks the activation).
    event ProfileProposed(bytes32 indexed modelId, bytes32 profileId, uint64 activeFrom, string uri);
    event ModelTransferred(bytes32 indexed modelId, address indexed previousOwner, address indexed newOwner);

    error ModelExists(bytes32 modelId);
    error UnknownModel(bytes32 modelId);
    error NotModelOwner(bytes32 modelId, address caller);
    error ZeroId();
    error ZeroAddress();
    error BadNumOps(uint256 numOps);

    constructor(uint64 profileDelay_) {
        profileDelay = profileDelay_;
    }

    /// @notice Registers `modelId` with its op count and first profile (active at once).
    function registerModel(bytes32 modelId, bytes32 profileId, uint32 numOps, string calldata uri) external {
        if (modelId == bytes32(0) || profileId == bytes32(0)) revert ZeroId();
        // N = 2^32 - 1 would overflow the trace's N + 1 leaves in uint32 arithmetic.
        if (numOps == 0 || numOps == type(uint32).max) revert BadNumOps(numOps);
        if (_models[modelId].owner != address(0)) revert ModelExists(modelId);
        Model storage m = _models[modelId];
        m.owner = msg.sender;
        m.numOps = numOps;
        m.profileId = profileId;
        m.uri = uri;
        emit ModelRegistered(modelId, msg.sender, profileId, numOps, uri);
    }

    /// @notice Schedules `profileId` to become the active profile `profileDelay` blocks from now.
    /// A proposal that is not active yet is replaced (its delay restarts with the new one).
    /// Invariant: no profile is ever active before `profileDelay` blocks of public notice, which
    /// stops an owner colluding with a prover from switching to a loose profile right before a
    /// cheating result is committed.
    function proposeProfile(bytes32 modelId, bytes32 profileId, string calldata uri) external {
        Model storage m = _owned(modelId);
        if (profileId == bytes32(0)) revert ZeroId();
        if (m.pendingFrom != 0 && block.number >= m.pendingFrom) {
            m.profileId = m.pendingProfile; // the earlier proposal is already active: keep it
        }
        uint64 activeFrom = uint64(block.number) + profileDelay;
        m.pendingProfile = profileId;
        m.pendingFrom = activeFrom;
        m.uri = uri;
        emit ProfileProposed(modelId, profileId, activeFrom, uri);
    }

    function transferModel(bytes32 modelId, address newOwner) external {
        Model storage m = _owned(modelId);
        if (newOwner == address(0)) revert ZeroAddress();
        m.owner = newOwner;
        emit ModelTransferred(modelId, msg.sender, newOwner);
    }

    function ownerOf(bytes32 modelId) external view returns (address) {
        return _models[modelId].owner;
    }

    /// @notice The active profile id of a model at this block; zero when the model is unknown.
    function profileOf(bytes32 modelId) public view returns (bytes32) {
        Model storage m = _models[modelId];
        uint64 from = m.pendingFrom;
        return from != 0 && block.number >= from ? m.pendingProfile : m.profileId;
    }

    /// @notice The proposed profile and the block from which it is active (zeros when none).
    function proposalOf(bytes32 modelId) external view returns (bytes32 profileId, uint64 activeFrom) {
        Model storage m = _models[modelId];
        return (m.pendingProfile, m.pendingFrom);
    }

    /// @notice The model's op count N (zero when the model is unknown).
    function numOpsOf(bytes32 modelId) external view returns (uint32) {
        return _models[modelId].numOps;
    }

    /// @notice What the coordinator needs at commit time: the active profile and N.
    function termsOf(bytes32 modelId) external view returns (bytes32 profileId, uint32 numOps) {
        return (profileOf(modelId), _models[modelId].numOps);
    }

    function uriOf(bytes32 modelId) external view returns (string memory) {
        return _models[modelId].uri;
    }

    function _owned(bytes32 modelId) private view returns (Model storage m) {
        m = _models[modelId];
        if (m.owner == address(0)) revert UnknownModel(modelId);
        if (m.owner != msg.sender) revert NotModelOwner(modelId, msg.sender);
    }
}
